"""``map`` against ``asyncio.gather`` of single calls: throughput of a trivial function (issue 22).

python -m bench.fanout [N]    # prints the section for bench/RESULTS.md

Both run N calls of ``def one(x): return x`` on one endpoint (workersMax=2, warm workers), from a
fresh FLASH_HOME's environment. ``gather`` starts every call at once (unbounded); ``map`` keeps
``workersMax x max_concurrency x 4`` in flight and hands results out in order. Each figure is the
median of 3 runs; the caller's peak RSS is recorded for each.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import sys
import time

from openflash import CpuLiveServerless, remote


@remote(CpuLiveServerless(name="bench-fanout", workersMax=2))
def one(x: int) -> int:
    return x


async def gathered(n: int) -> float:
    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    assert results == list(range(n))
    return time.perf_counter() - start


async def mapped(n: int) -> float:
    start = time.perf_counter()
    results = [y async for y in one.map(range(n))]
    assert results == list(range(n))
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000

    async def run() -> tuple[list[float], list[float], int, int]:
        await asyncio.gather(one(0), one(1))  # warm
        g, m = [], []
        for _ in range(3):
            m.append(await mapped(n))
        m_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(3):
            g.append(await gathered(n))
        g_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return g, m, m_rss, g_rss

    g, m, m_rss, g_rss = asyncio.run(run())
    gm, mm = statistics.median(g), statistics.median(m)
    print("## Fan-out: `map` against `asyncio.gather` of single calls (issue 22)\n")
    print(f"| {n} calls of a trivial function, workersMax=2 | time | calls/s | caller peak RSS |")
    print("| --- | --- | --- | --- |")
    rows = [
        ("`[y async for y in f.map(range(n))]`", mm, f"{m_rss / 1024:.0f} MiB"),
        ("`asyncio.gather(*(f(i) for i in ...))`", gm, f"{g_rss / 1024:.0f} MiB (after both)"),
    ]
    for label, seconds, rss in rows:
        print(f"| {label} | {seconds:.2f} s | {n / seconds:.0f} | {rss} |")
    print(f"\nmap / gather throughput: {gm / mm:.2f}x (goal: >= 2x).")


if __name__ == "__main__":
    main()
