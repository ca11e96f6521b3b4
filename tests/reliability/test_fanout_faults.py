"""`map` and `retries` under a worker killed in the middle of a map: no input is lost and none is
done twice. Each input leaves a side-effect file (a line per completed run), so the test counts
what really ran, not what the caller was told."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, Retries, WorkerCrashedError, remote

Report = Callable[[str, str, str], None]

pytestmark = pytest.mark.usefixtures("flash_home")

INPUTS = 24
VICTIM = 7
#: What "no caller hangs" means here (a bound, not a speed target).
HANG_LIMIT_S = 60.0


def step(i: int, folder: str, victim_input: int) -> int:
    import os
    import time

    with open(os.path.join(folder, f"starts-{i}"), "a") as f:
        f.write(f"{os.getpid()}\n")
    victim = os.path.join(folder, "victim-pid")
    if i == victim_input and not os.path.exists(victim):
        with open(victim + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(victim + ".tmp", victim)
        time.sleep(60)  # killed here, by the test
    time.sleep(0.02)
    with open(os.path.join(folder, f"done-{i}"), "a") as f:  # the side effect, once per run
        f.write(f"{os.getpid()}\n")
    return i * i


plain = remote(CpuLiveServerless(name="faults-map", workersMax=2))(step)
retried = remote(
    CpuLiveServerless(name="faults-map-retried", workersMax=2),
    retries=Retries(2, initial_delay=0.1, retry_on=("crash",)),
)(step)


def _map_with_a_kill(fn: object, folder: Path) -> tuple[list[object], float]:
    async def main() -> tuple[list[object], float]:
        async def collect() -> list[object]:
            items = [(i, str(folder), VICTIM) for i in range(INPUTS)]
            return [y async for y in fn.starmap(items, return_exceptions=True)]  # type: ignore[attr-defined]

        started = time.monotonic()
        task = asyncio.ensure_future(collect())
        victim = folder / "victim-pid"
        while not victim.exists():
            assert not task.done(), task.result()
            await asyncio.sleep(0.01)
        os.kill(int(victim.read_text()), signal.SIGKILL)
        results = await asyncio.wait_for(task, HANG_LIMIT_S)
        return results, time.monotonic() - started

    return asyncio.run(main())


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_worker_killed_mid_map_loses_no_input_and_duplicates_none(
    tmp_path: Path, report: Report
) -> None:
    results, took = _map_with_a_kill(plain, tmp_path)
    assert len(results) == INPUTS
    for i, result in enumerate(results):
        if i == VICTIM:
            assert isinstance(result, WorkerCrashedError), result
            assert result.signal == signal.SIGKILL
            assert _lines(tmp_path / f"done-{i}") == []  # it never completed
        else:
            assert result == i * i, (i, result)
            assert len(_lines(tmp_path / f"done-{i}")) == 1, i
        assert len(_lines(tmp_path / f"starts-{i}")) == 1, i  # none sent twice
    report(
        "fan-out",
        f"SIGKILL to a worker running input {VICTIM} of a `map` over {INPUTS} inputs "
        "(workersMax=2, no retries)",
        f"every input answered at its position in {took:.1f} s: {INPUTS - 1} results and, at "
        f"{VICTIM}, WorkerCrashedError (signal 9); each other input ran exactly once "
        "(a side-effect file each), none was sent twice",
    )


def test_a_worker_killed_mid_map_under_retries_runs_the_input_again_once(
    tmp_path: Path, report: Report
) -> None:
    results, took = _map_with_a_kill(retried, tmp_path)
    assert results == [i * i for i in range(INPUTS)]
    for i in range(INPUTS):
        assert len(_lines(tmp_path / f"done-{i}")) == 1, i
        starts = _lines(tmp_path / f"starts-{i}")
        if i == VICTIM:  # the killed run, then one retry on another worker
            assert len(starts) == 2 and starts[0] != starts[1], starts
        else:
            assert len(starts) == 1, (i, starts)
    report(
        "fan-out",
        f"SIGKILL to a worker running input {VICTIM} of a `map` over {INPUTS} inputs "
        '(workersMax=2, `retries=Retries(2, retry_on=("crash",))`)',
        f"all {INPUTS} results in order in {took:.1f} s; input {VICTIM} ran again once on a new "
        "worker, every input completed exactly once (a side-effect file each)",
    )
