"""Fan-out and cancellation on real workers: map, starmap, spawn, spawn_map, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, Endpoint, RemoteError, WorkerCrashedError, remote

pytestmark = pytest.mark.usefixtures("flash_home")


def run(coro):
    return asyncio.run(coro)


@remote(CpuLiveServerless(name="fan-square", workersMax=2))
def square(x: int) -> int:
    if x == 37:
        raise ValueError(f"bad item {x}")
    return x * x


def test_map_over_ten_thousand_inputs_in_order_in_bounded_memory() -> None:
    started = []

    def inputs():
        for i in range(10_000):
            started.append(i)
            yield i if i != 37 else 38

    async def main():
        out = []
        async for y in square.map(inputs()):
            out.append(y)
            # never more than the window read ahead of what came out
            assert len(started) - len(out) <= 2 * 1 * 4
        return out

    out = run(main())
    assert out == [(i if i != 37 else 38) ** 2 for i in range(10_000)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"caller peak RSS after map over 10,000 inputs: {peak / 1024:.0f} MiB")


def test_unordered_outputs_are_the_same_set() -> None:
    async def main():
        return [y async for y in square.map(range(100, 200), order_outputs=False)]

    assert sorted(run(main())) == [x * x for x in range(100, 200)]


def test_a_failure_raises_at_its_position_or_is_returned() -> None:
    async def raising():
        out = []
        with pytest.raises(RemoteError, match="bad item 37") as info:
            async for y in square.map(range(50)):
                out.append(y)
        return out, info.value

    out, error = run(raising())
    assert out == [x * x for x in range(37)]
    assert isinstance(error.__cause__ or error, Exception)

    async def returned():
        return [y async for y in square.map(range(50), return_exceptions=True)]

    results = run(returned())
    assert isinstance(results[37], RemoteError) and "bad item 37" in str(results[37])
    assert results[:37] == [x * x for x in range(37)]
    assert results[38:] == [x * x for x in range(38, 50)]


@remote(CpuLiveServerless(name="fan-add", workersMax=1))
async def add(a: int, b: int, *, c: int = 0) -> int:
    return a + b + c


def test_starmap_several_iterables_and_keywords() -> None:
    async def main():
        star = [y async for y in add.starmap([(1, 2), (3, 4)], c=10)]
        zipped = [y async for y in add.map([1, 2, 3], [10, 20, 30])]
        return star, zipped

    assert run(main()) == ([13, 17], [11, 22, 33])


def test_spawn_then_await_and_spawn_map() -> None:
    async def main():
        job = add.spawn(1, 2)
        many = add.spawn_map(range(5), range(5))
        assert await job == 3 and await job.result() == 3
        assert job.status == "COMPLETED"
        assert await many == [0, 2, 4, 6, 8]
        failed = square.spawn(37)
        with pytest.raises(RemoteError):
            await failed
        return failed.status

    assert run(main()) == "FAILED"


@remote(CpuLiveServerless(name="fan-class", workersMax=1))
class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    def plus(self, x: int) -> int:
        return self.start + x


def test_methods_fan_out_too() -> None:
    async def main():
        counter = Counter(100)
        return [y async for y in counter.plus.map(range(4))], await counter.plus.spawn(1)

    assert run(main()) == ([100, 101, 102, 103], 101)


@remote(CpuLiveServerless(name="fan-stream", workersMax=1))
def numbers(n: int):
    yield from range(n)


def test_generator_functions_do_not_map() -> None:
    with pytest.raises(TypeError, match="generator function"):
        numbers.map(range(3))


# Cancellation stops work (a side-effect file proves it).


@remote(CpuLiveServerless(name="fan-ticks-async", workersMax=1))
async def ticking(path: str, tag: str) -> str:
    for _ in range(600):
        with open(path, "a") as f:
            f.write(tag + "\n")
        await asyncio.sleep(0.02)
    return "finished"


@remote(CpuLiveServerless(name="fan-ticks-sync", workersMax=1))
def busy(path: str) -> int:
    while True:  # a sync busy loop: only killing its worker stops it
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.02)


@remote(CpuLiveServerless(name="fan-ticks-sync", workersMax=1))
def pid() -> int:
    return os.getpid()


async def _grows(path: Path) -> None:
    while not path.exists() or not path.read_text():
        await asyncio.sleep(0.02)


def _stopped(path: Path) -> bool:
    before = path.read_text()
    time.sleep(0.5)
    return path.read_text() == before


def test_cancelling_a_spawned_async_call_stops_it_in_its_worker(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"

    async def main():
        job = ticking.spawn(str(ticks), "a")
        await _grows(ticks)
        assert job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert job.status == "CANCELLED"
        await asyncio.sleep(0.3)
        return await ticking.spawn(str(tmp_path / "other"), "b").result(timeout=0.01)

    with pytest.raises(TimeoutError):  # the worker is free for the next call
        run(main())
    assert _stopped(ticks)


def test_a_cancelled_await_stops_a_sync_busy_loop_by_replacing_its_worker(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"

    async def main():
        first = await pid()
        task = asyncio.ensure_future(busy(str(ticks)))
        await _grows(ticks)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return first

    first = run(main())
    time.sleep(2.5)  # the grace period (FLASH_CANCEL_GRACE_S, 2 s) passes: the worker is killed
    assert _stopped(ticks)
    assert run(pid()) != first  # a new worker took its place


@remote(CpuLiveServerless(name="fan-maybe", workersMax=2))
async def maybe_ticking(path: str) -> str:
    if not path:
        return "quick"
    while True:
        with open(path, "a") as f:
            f.write("tick\n")
        await asyncio.sleep(0.02)


def test_breaking_out_of_map_stops_the_calls_in_flight(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"

    async def main():
        async with contextlib.aclosing(
            maybe_ticking.map([str(ticks), ""], order_outputs=False)
        ) as results:
            first = None
            async for item in results:
                first = item
                await _grows(ticks)
                break
        return first

    assert run(main()) == "quick"
    time.sleep(0.3)
    assert _stopped(ticks)


@Endpoint(name="fan-shared", workers=1, max_concurrency=2)
def sleepy(path: str, forever: bool) -> str:
    while forever:
        with open(path, "a") as f:
            f.write("tick\n")
        time.sleep(0.02)
    time.sleep(4)
    return "slept"


def test_other_calls_on_a_worker_killed_for_a_cancel_fail_with_a_clear_error(
    tmp_path: Path,
) -> None:
    ticks = tmp_path / "ticks"

    async def main():
        stuck = sleepy.spawn(str(ticks), True)
        other = sleepy.spawn("", False)
        await _grows(ticks)
        stuck.cancel()
        with pytest.raises(WorkerCrashedError, match="was cancelled and did not stop") as info:
            await other
        return str(info.value)

    message = run(main())
    assert "sleepy()" in message
    assert _stopped(ticks)


@remote(CpuLiveServerless(name="fan-outer", workersMax=1))
async def fan_inside(n: int) -> dict:
    ordered = [y async for y in square.map(range(n))]
    job = square.spawn(3)
    failed = [y async for y in square.map([36, 37], return_exceptions=True)]
    return {"ordered": ordered, "spawned": await job, "failed": repr(failed[1])}


def test_nested_fan_out_through_the_light_client() -> None:
    result = run(fan_inside(20))
    assert result["ordered"] == [x * x for x in range(20)]
    assert result["spawned"] == 9
    assert "bad item 37" in result["failed"]
