"""Scale from zero: the next call of an endpoint whose workers all idled out (issue 25, item 1).

python -m bench.scale_zero [REPS]    # prints the rows for bench/RESULTS.md

One program per (mode, repetition), each a new process over one store where the medium set's
environment exists. Its endpoint (workersMin=0, idleTimeout=1) has a function that imports the
medium set (``import scipy.stats``, not only ``scipy``). The program calls once (the first worker
is spawned; the template starts beside it), waits for the template, then three times: waits until
the pool is empty and times the next call. Modes, side by side in one run:

- *code*: no ``preload=``; no learned record (removed before the program): what reading the code
  gives, dotted names;
- *learned*: no ``preload=``; the record the previous programs left (the steady state);
- *hand*: ``preload=[...]`` written by hand: the floor the goal is stated against;
- *before*: the tree of /work/main (``BENCH_BEFORE_SRC``), no ``preload=``: what it was.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from bench import cases
from bench.first_env import _wait_for_bytecode

IMPORTS = ["pandas", "numpy", "scipy.stats", "matplotlib"]

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from openflash import CpuLiveServerless, remote
    from openflash.runtime import process

    DEPS, HAND = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    extra = {"preload": HAND} if HAND else {}

    @remote(CpuLiveServerless(name="bench-zero", workersMax=2, idleTimeout=1),
            dependencies=DEPS, **extra)
    def work():
        import os
        import matplotlib
        import numpy
        import pandas
        import scipy.stats
        return os.getpid()

    def wait(until, limit=120):
        deadline = time.monotonic() + limit
        while not until() and time.monotonic() < deadline:
            time.sleep(0.02)

    def empty():
        stats = process.get_runtime().pool_stats(work.endpoint)
        return stats is not None and stats["workers"] == 0

    asyncio.run(work())
    wait(lambda: any(t["pid"] for t in process.get_runtime().templates()))
    times = []
    for _ in range(3):
        wait(empty)
        started = time.perf_counter()
        asyncio.run(work())
        times.append(time.perf_counter() - started)
    print(json.dumps({"times": times}))
    """
)

MEDIUM = ["pandas", "numpy", "scipy>=1.11.0", "matplotlib"]


def _program(bench: cases.Bench, home: Path, hand: list[str], src: str | None) -> list[float]:
    env = bench.environ(home)
    if src:
        env["PYTHONPATH"] = src
    done = subprocess.run(
        [sys.executable, str(bench.root / "zero.py"), json.dumps(MEDIUM), json.dumps(hand)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the scale-from-zero program failed:\n{done.stderr[-3000:]}")
    times: list[float] = json.loads(done.stdout.strip().splitlines()[-1])["times"]
    return times


def main(reps: int) -> None:
    bench = cases.Bench()
    shared = os.environ.get("OPENFLASH_TEST_UV_CACHE")
    if shared:
        bench.uv_cache = Path(shared)
    (bench.root / "zero.py").write_text(PROGRAM)
    home = bench.root / "home"
    own = os.environ.get("PYTHONPATH", "")
    before = os.environ.get("BENCH_BEFORE_SRC", "/work/main/src")
    modes = {"code": [], "learned": [], "hand": [], "before": []}  # type: dict[str, list[float]]
    try:
        os.environ["FLASH_BYTECODE_NICE"] = "0"  # compiled at once, then waited for: its
        bench.run(home, MEDIUM, 1, imports=["pandas", "numpy", "scipy", "matplotlib"])
        _wait_for_bytecode(home)  # background compiler must not slow the programs
        os.environ.pop("FLASH_BYTECODE_NICE")
        for _ in range(reps):
            for path in home.glob("envs/*/.openflash-preload"):
                shutil.rmtree(path)
            modes["code"] += _program(bench, home, [], own)
            modes["learned"] += _program(bench, home, [], own)
            modes["hand"] += _program(bench, home, IMPORTS, own)
            if Path(before).is_dir():
                modes["before"] += _program(bench, home, [], before)
    finally:
        bench.cleanup()
    load = os.getloadavg()
    hand = statistics.median(modes["hand"])
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {reps} programs x 3 calls")
    print("| scale from zero, medium set | n | p50 | min | max | / hand-written preload |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, label in (
        ("before", "before (main), no `preload=`"),
        ("code", "no `preload=`, first process (dotted names from the code)"),
        ("learned", "no `preload=`, learned record"),
        ("hand", "hand-written `preload=` (floor)"),
    ):
        times = modes[mode]
        if not times:
            continue
        p50 = statistics.median(times)
        print(
            f"| {label} | {len(times)} | {p50 * 1000:.1f} ms | {min(times) * 1000:.1f} ms | "
            f"{max(times) * 1000:.1f} ms | {p50 / hand:.2f}x |"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
