"""The warm call's fast paths keep every semantic (issue 25, item 2): arguments pickled by the C
pickler unless cloudpickle is needed (api/values.py), a warm pool that sends a call at once
(workers/pool.py), and a call from a loop other than the runtime's that hops with one callback
each way (runtime/hops.py). Real workers, real pools; "hop" is a script's own loop (the runtime
on its thread), "loop" the runtime on the caller's loop (as under ``flash run``)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from openflash import CpuLiveServerless, remote
from openflash.api import values
from openflash.errors import FlashError
from openflash.runtime import process
from openflash.workers import events

pytestmark = pytest.mark.usefixtures("flash_home")

MODES = ["hop", "loop"]


def run(mode: str, body: Callable[[], Awaitable[Any]]) -> Any:
    """``body()`` from a script's loop ("hop") or with the runtime on that loop ("loop")."""

    async def main() -> Any:
        if mode == "hop":
            return await body()
        process.run_on_current_loop()
        try:
            return await body()
        finally:
            await process.shutdown_current_loop()

    return asyncio.run(main())


@remote(CpuLiveServerless(name="paths-ticks", workersMax=1))
async def ticking(path: str) -> str:
    for _ in range(1500):
        with open(path, "a") as f:
            f.write("tick\n")
        await asyncio.sleep(0.02)
    return "finished"


@remote(CpuLiveServerless(name="paths-ticks", workersMax=1))
def worker_pid() -> int:
    return os.getpid()


@pytest.mark.parametrize("mode", MODES)
def test_a_caller_that_gives_up_cancels_its_call_in_the_worker(mode: str, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"

    async def body() -> tuple[int, int, str, str]:
        before = await worker_pid()  # warm: the call below takes the fast path
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ticking(str(ticks)), 1.0)
        await asyncio.sleep(0.3)  # a tick in flight lands
        first = ticks.read_text()
        await asyncio.sleep(0.5)  # (the runtime and its worker still run)
        return before, await worker_pid(), first, ticks.read_text()

    before, after, first, later = run(mode, body)
    assert first  # it ran
    assert later == first  # and stopped in its worker (else 30 s of ticks)
    assert after == before  # an async function is interrupted: its worker stays


class Scaled:
    """A class of this (the caller's) module: it travels by value, like the module's functions."""

    def __init__(self, factor: int) -> None:
        self.factor = factor


@remote(CpuLiveServerless(name="paths-apply"))
def apply(fn: Callable[[Any], Any], value: Any) -> Any:
    return fn(value)


def _closure(offset: int) -> Callable[[int], int]:
    def add(x: int) -> int:
        return x + offset

    return add


def test_arguments_only_cloudpickle_sends_still_round_trip() -> None:
    class Local:
        def __init__(self, name: str) -> None:
            self.name = name

    async def body() -> list[Any]:
        return [
            await apply(lambda x: x * 3, 14),
            await apply(_closure(40), 2),
            await apply(lambda local: f"hello {local.name}", Local("worker")),
            await apply(lambda scaled: scaled.factor * 2, Scaled(21)),
            await apply(len, memoryview(b"x" * 70_000)),  # out of band, as before
        ]

    assert run("hop", body) == [42, 42, "hello worker", 42, 70_000]


def test_plain_arguments_are_the_c_picklers_bytes_and_the_rest_cloudpickles() -> None:
    """The fast path is taken where it may be, and only there."""
    import pickle

    plain = values._pack(((1, "a", 2.5, None, b"x"), {"k": True}))
    assert bytes(plain.data) == pickle.dumps(((1, "a", 2.5, None, b"x"), {"k": True}), protocol=5)
    nested = values._pack((([1, {"a": (2, 3)}],), {}))
    assert pickle.loads(nested.data) == (([1, {"a": (2, 3)}],), {})
    for by_value in (lambda: 1, _closure(1), Scaled(1), Scaled):
        packed = values._pack(((by_value,), {}))
        assert b"cloudpickle" in bytes(packed.data), by_value  # by value: cloudpickle's reducers


def test_an_unpicklable_argument_still_names_the_failure_and_what_to_do() -> None:
    lock = threading.Lock()

    async def body() -> None:
        await apply(len, lock)

    with pytest.raises(FlashError) as info:
        run("hop", body)
    assert info.value.message == (
        "the arguments of apply() cannot be sent to its worker: cannot pickle '_thread.lock' object"
    )
    assert info.value.hint == (
        "pass picklable values (numbers, strings, lists, dicts, dataclasses, arrays)"
    )


@remote(CpuLiveServerless(name="paths-square", workersMax=2))
def square(x: int) -> int:
    return x * x


def test_calls_from_several_loops_and_threads_at_once_all_complete() -> None:
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def script(name: str, start: int) -> None:
        async def body() -> list[int]:
            out = []
            for i in range(start, start + 300):
                out.append(await square(i))
            out.extend(await asyncio.gather(*(square(i) for i in range(start, start + 20))))
            return out

        try:
            results[name] = asyncio.run(body())
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=script, args=(f"t{n}", n * 1000)) for n in range(3)]
    for thread in threads:
        thread.start()
    script("main", 5000)
    for thread in threads:
        thread.join(120)
    assert errors == []
    for name, start in [("t0", 0), ("t1", 1000), ("t2", 2000), ("main", 5000)]:
        expected = [i * i for i in range(start, start + 300)]
        expected += [i * i for i in range(start, start + 20)]
        assert results[name] == expected


@remote(CpuLiveServerless(name="paths-idle", workersMin=0, idleTimeout=1))
def idle_pid() -> int:
    return os.getpid()


@pytest.mark.parametrize("mode", MODES)
def test_the_idle_timeout_stops_a_worker_after_many_calls(mode: str) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    unsubscribe = events.subscribe(lambda kind, fields: seen.append((kind, fields)))

    async def body() -> tuple[set[int], bool]:
        pids = {await idle_pid() for _ in range(500)}
        for _ in range(600):  # a bound on the test, not a figure: 30 s at most
            if any(kind == "worker_exited" for kind, __ in seen):
                break
            await asyncio.sleep(0.05)
        return pids, bool(process.get_runtime().pool_stats(idle_pid.endpoint)["pids"])

    try:
        pids, still_running = run(mode, body)
    finally:
        unsubscribe()
    exited = [fields for kind, fields in seen if kind == "worker_exited"]
    assert len(pids) == 1
    assert [e["pid"] for e in exited] == list(pids)
    assert exited[0]["crashed"] is False
    assert not still_running


def test_the_reused_pickler_never_changes_arguments_already_packed() -> None:
    """A large pickle is handed out without a copy (the thread's pickler starts afresh), a small
    one is copied out: packing the next call's arguments never touches an earlier call's."""
    import pickle

    first = values._pack((({"big": b"a" * 100_000},), {}))
    second = values._pack((([1, 2],), {}))
    third = values._pack((({"big": b"b" * 100_000},), {}))
    assert pickle.loads(first.data) == (({"big": b"a" * 100_000},), {})
    assert pickle.loads(second.data) == (([1, 2],), {})
    assert pickle.loads(third.data) == (({"big": b"b" * 100_000},), {})
