"""One 320 MB numpy echo through openflash, phase by phase (issue 25, item 3): the round trip's
wall time, the caller's CPU and minor page faults, the worker's CPU and faults
(``/proc/<pid>/stat``), and in the caller the time spent writing the argument's memfd
(``shared_memory.send``), mapping the result (``shared_memory.received``, where the tree has it)
and loading it; then the first read of every page of the result and a local pickle round trip.

Reproduce: ``PYTHONPATH=TREE/src python -m bench.payload_phases`` (with FLASH_HOME and
FLASH_UV_CACHE_DIR as for ``bench.payloads``; run the trees alternately).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from openflash import CpuLiveServerless, remote
from openflash.api import values
from openflash.runtime import process
from openflash.workers import shared_memory

spent: dict[str, float] = {}


def timed(module: Any, name: str, key: str) -> None:
    """``module.name`` wrapped: its wall time added to ``spent[key]`` (absent: nothing)."""
    fn: Callable[..., Any] | None = getattr(module, name, None)
    if fn is None:
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - started

    setattr(module, name, wrapper)


@remote(CpuLiveServerless(name="phase-payload"), dependencies=["numpy==2.1.3"])
def echo(array):  # type: ignore[no-untyped-def]
    return array


def worker_stat(pid: int) -> tuple[int, float]:
    """The worker's minor faults and CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


async def main(calls: int = 3, mb: int = 320) -> None:
    timed(shared_memory, "send", "args_memfd_write_s")
    timed(shared_memory, "received", "result_map_s")
    timed(values, "load_result", "result_load_s")
    await echo(np.zeros(4))  # the worker starts
    stats = process.get_runtime().pool_stats(echo.endpoint)
    assert stats is not None
    pid = stats["pids"][0]  # type: ignore[index]
    array = np.random.default_rng(0).standard_normal(mb * 2**20 // 8)
    for _ in range(calls):
        spent.clear()
        before, worker = resource.getrusage(resource.RUSAGE_SELF), worker_stat(pid)
        started = time.perf_counter()
        result = await echo(array)
        wall = time.perf_counter() - started
        after, worker_after = resource.getrusage(resource.RUSAGE_SELF), worker_stat(pid)
        started = time.perf_counter()
        assert np.array_equal(result[::512], array[::512])  # every page of it read
        touch = time.perf_counter() - started
        del result
        started = time.perf_counter()
        pickle.loads(pickle.dumps(array, protocol=5))
        local = time.perf_counter() - started
        row = {
            "wall_s": round(wall, 3),
            "caller_cpu_s": round(cpu(after) - cpu(before), 3),
            "caller_minflt": after.ru_minflt - before.ru_minflt,
            "worker_cpu_s": round(worker_after[1] - worker[1], 3),
            "worker_minflt": worker_after[0] - worker[0],
            **{k: round(v, 3) for k, v in spent.items()},
            "touch_result_s": round(touch, 3),
            "local_pickle_s": round(local, 3),
            "load": round(os.getloadavg()[0], 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
