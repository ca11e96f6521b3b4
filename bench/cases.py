"""The benchmark cases. Each returns a list of seconds, one per repetition.

Every case runs real user programs as separate processes with a store of its own, so that what is
timed is what a user waits for: from the call to its result.
"""

from __future__ import annotations

import glob
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
from dataclasses import dataclass
from pathlib import Path

SMALL_SET = ["requests==2.32.3", "Pillow>=10.0.0", "python-dateutil<3.0.0", "httpx"]


@dataclass(frozen=True)
class PackageSet:
    """One row of the user guide's cold start table: what a function declares and imports."""

    name: str
    specs: list[str]
    imports: list[str]
    published: str  # the cold start the user guide publishes for Runpod Flash


def _torch() -> str | None:
    """The CPU build of torch: ``BENCH_TORCH``, else a wheel file in /opt/wheels (this machine
    has one), else None (the large set is skipped: PyPI's torch is the CUDA build, gigabytes)."""
    if os.environ.get("BENCH_TORCH"):
        return os.environ["BENCH_TORCH"]
    found = sorted(glob.glob("/opt/wheels/torch-*+cpu-*.whl"))
    return found[-1] if found else None


def package_sets() -> dict[str, PackageSet]:
    sets = [
        PackageSet("none", [], [], "~5-10 s"),
        PackageSet("small", SMALL_SET, ["requests", "PIL", "dateutil", "httpx"], "~15-30 s"),
        PackageSet(
            "medium",
            ["pandas", "numpy", "scipy>=1.11.0", "matplotlib"],
            ["pandas", "numpy", "scipy", "matplotlib"],
            "~30-60 s",
        ),
    ]
    torch = _torch()
    if torch:
        sets.append(PackageSet("large", [torch], ["torch"], "~60-120 s"))
    return {s.name: s for s in sets}


PROGRAM = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from openflash import CpuLiveServerless, remote

    DEPS = json.loads(sys.argv[1])
    SYSTEM = json.loads(sys.argv[2])
    CALLS = int(sys.argv[3])
    IMPORTS = json.loads(sys.argv[4]) if len(sys.argv) > 4 else []

    @remote(CpuLiveServerless(name="bench"), dependencies=DEPS, system_dependencies=SYSTEM)
    def trivial(x, modules):
        import importlib, sys
        for name in modules:
            importlib.import_module(name)
        return sys.executable

    async def main():
        times = []
        for i in range(CALLS):
            started = time.perf_counter()
            python = await trivial(i, IMPORTS)
            times.append(time.perf_counter() - started)
        print(json.dumps({"times": times, "python": python}))

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
        self,
        home: Path,
        deps: list[str],
        calls: int,
        system: list[str] | None = None,
        imports: list[str] | None = None,
    ) -> list[float]:
        """Run the program: ``calls`` calls, one after another; the seconds each took."""
        return self.run_program(home, deps, calls, system, imports)["times"]

    def run_program(
        self,
        home: Path,
        deps: list[str],
        calls: int,
        system: list[str] | None = None,
        imports: list[str] | None = None,
    ) -> dict:
        """As :meth:`run`, with the worker's interpreter (``python``) beside the ``times``."""
        env = self.environ(home)
        done = subprocess.run(
            [
                sys.executable,
                str(self.program),
                json.dumps(deps),
                json.dumps(system or []),
                str(calls),
                json.dumps(imports or []),
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

    def forget_environments(self, home: Path) -> None:
        """Empty the store's environments and cached resolutions; keep the package caches (uv's,
        and the store's bytecode, both keyed by package content) and the worker runtime."""
        for part in ("envs", "resolutions"):
            shutil.rmtree(home / part, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


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


def _trivial(x: int) -> int:
    return x


def in_process_call(bench: Bench, reps: int) -> list[float]:
    """The floor of a warm call: a plain function called in this process."""
    times = []
    for i in range(reps + 50):
        started = time.perf_counter()
        _trivial(i)
        times.append(time.perf_counter() - started)
    return times[50:]


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
