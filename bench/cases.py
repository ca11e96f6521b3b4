"""The benchmark cases. Each returns a list of seconds, one per repetition.

Every case runs real user programs as separate processes with a store of its own, so that what is
timed is what a user waits for: from the call to its result.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SMALL_SET = ["requests==2.32.3", "Pillow>=10.0.0", "python-dateutil<3.0.0", "httpx"]

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from openflash import CpuLiveServerless, remote

    DEPS = json.loads(sys.argv[1])
    SYSTEM = json.loads(sys.argv[2])
    CALLS = int(sys.argv[3])

    @remote(CpuLiveServerless(name="bench"), dependencies=DEPS, system_dependencies=SYSTEM)
    def trivial(x):
        return x

    async def main():
        times = []
        for i in range(CALLS):
            started = time.perf_counter()
            await trivial(i)
            times.append(time.perf_counter() - started)
        print(json.dumps(times))

    asyncio.run(main())
    """
)


class Bench:
    """A scratch directory with the program, a shared uv cache, and stores made on demand."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="openflash-bench-"))
        self.uv_cache = self.root / "uv-cache"
        self.apt_dir = self.root / "apt"
        self.program = self.root / "program.py"
        self.program.write_text(PROGRAM)

    def environ(self, home: Path) -> dict[str, str]:
        return {
            **os.environ,
            "FLASH_HOME": str(home),
            "FLASH_UV_CACHE_DIR": str(self.uv_cache),
            "FLASH_APT_DIR": str(self.apt_dir),
        }

    def run(
        self, home: Path, deps: list[str], calls: int, system: list[str] | None = None
    ) -> list[float]:
        env = self.environ(home)
        done = subprocess.run(
            [
                sys.executable,
                str(self.program),
                json.dumps(deps),
                json.dumps(system or []),
                str(calls),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"benchmark program failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def cold_start_no_dependencies(bench: Bench, reps: int) -> list[float]:
    """A fresh process's first call; the (empty) environment exists, no worker runs."""
    home = bench.root / "home-none"
    bench.run(home, [], 1)  # build the environment and the worker runtime once
    return [bench.run(home, [], 1)[0] for _ in range(reps)]


def new_small_environment(bench: Bench, reps: int) -> list[float]:
    """First call with an empty store and a warm package cache: resolve, build, start, call."""
    bench.run(bench.root / "home-warmup", SMALL_SET, 1)  # warm uv's cache
    times = []
    for i in range(reps):
        home = bench.root / f"home-small-{i}"
        times.append(bench.run(home, SMALL_SET, 1)[0])
        shutil.rmtree(home, ignore_errors=True)
    return times


def new_ffmpeg_layer(bench: Bench, reps: int) -> list[float]:
    """First call with ``system_dependencies=["ffmpeg"]`` and an empty layer store.

    apt's index and .deb cache are warm (as uv's cache is for Python packages): what is timed is
    resolving the closure, extracting it, fixing it up, and the call.
    """
    bench.run(bench.root / "home-ffmpeg-warmup", [], 1, ["ffmpeg"])  # index and .debs
    times = []
    for i in range(reps):
        home = bench.root / f"home-ffmpeg-{i}"
        times.append(bench.run(home, [], 1, ["ffmpeg"])[0])
        shutil.rmtree(home, ignore_errors=True)
    return times


def cold_start_ffmpeg_layer(bench: Bench, reps: int) -> list[float]:
    """A fresh process's first call with the ffmpeg layer built: what the layer adds to a start."""
    home = bench.root / "home-ffmpeg-built"
    bench.run(home, [], 1, ["ffmpeg"])
    return [bench.run(home, [], 1, ["ffmpeg"])[0] for _ in range(reps)]


def warm_call_round_trip(bench: Bench, reps: int) -> list[float]:
    """Calls to a warm worker, one after another, from Python."""
    home = bench.root / "home-none"
    times = bench.run(home, [], reps + 50)
    return times[50:]  # the first call starts the worker; the next ones warm the path


_ECHO = (
    "import socket,sys\n"
    "s=socket.socket(fileno=int(sys.argv[1]))\n"
    "while (d:=s.recv(64)): s.sendall(d)"
)


def raw_pipe_round_trip(bench: Bench, reps: int) -> list[float]:
    """The floor: a 16-byte ping-pong over a socketpair with a bare Python process."""
    parent, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", _ECHO, str(child.fileno())], pass_fds=(child.fileno(),)
    )
    child.close()
    times = []
    try:
        for _ in range(reps + 50):
            started = time.perf_counter()
            parent.sendall(b"x" * 16)
            parent.recv(64)
            times.append(time.perf_counter() - started)
    finally:
        parent.close()
        proc.wait(10)
    return times[50:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(times), "p50": statistics.median(ordered), "p99": p99, "max": ordered[-1]}
