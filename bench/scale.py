"""Twenty endpoints, twenty different small sets, all called at once on a store without them.

The sets are pairs from twenty small, widely used packages (endpoint k needs packages k and k+1),
so that every endpoint needs an environment of its own and no two are the same. Package caches
are warm, as in the cold start table's *new env* column. One program calls all twenty at once and
records when each first result arrives; a sampler adds up the resident memory of the program and
every process under it (workers, uv) every 20 ms: the peak, and the total once every result is in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from bench import cases

PACKAGES = [
    "six", "idna", "attrs", "click", "pyyaml", "toml", "tomli", "packaging", "certifi",
    "charset-normalizer", "urllib3", "colorama", "tqdm", "pytz", "tabulate", "wrapt",
    "decorator", "markupsafe", "itsdangerous", "pyparsing",
]  # fmt: skip

SETS = [[PACKAGES[k], PACKAGES[(k + 1) % len(PACKAGES)]] for k in range(len(PACKAGES))]

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from openflash import CpuLiveServerless, remote

    def endpoint(number, deps):
        @remote(CpuLiveServerless(name=f"scale-{number:02d}"), dependencies=deps)
        def touch():
            return number
        return touch

    async def main():
        functions = [endpoint(k + 1, deps) for k, deps in enumerate(json.loads(sys.argv[1]))]
        started = time.perf_counter()

        async def first_result(function):
            await function()
            return time.perf_counter() - started

        print(json.dumps(await asyncio.gather(*map(first_result, functions))), flush=True)
        sys.stdin.read()  # the sampler reads the pool's memory, then closes stdin

    asyncio.run(main())
    """
)


def tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and every process under it, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * page
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run(bench: cases.Bench, reps: int) -> dict[str, list[float]]:
    program = bench.root / "scale_program.py"
    program.write_text(PROGRAM)
    home = bench.root / "home-scale"
    bench.run(home, PACKAGES, 1)  # warm the package caches with every package once
    results: dict[str, list[float]] = {"total": [], "twentieth": [], "peak": [], "pool": []}
    for _ in range(reps):
        bench.forget_environments(home)
        times, peak, pool = _one_round(program, bench.environ(home))
        results["total"].append(max(times))
        results["twentieth"].append(times[-1])
        results["peak"].append(peak)
        results["pool"].append(pool)
    return results


def _one_round(program: Path, env: dict[str, str]) -> tuple[list[float], float, float]:
    proc = subprocess.Popen(
        [sys.executable, str(program), json.dumps(SETS)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        pool = tree_rss(proc.pid)
    finally:
        stop.set()
        sampler.join()
        _, err = proc.communicate("", timeout=120)
    if not line:
        raise RuntimeError(f"the scale program failed:\n{err[-3000:]}")
    return json.loads(line), float(peak), float(pool)
