"""Generator functions stream from Python: real worker processes, items as they are yielded.

Incremental delivery is proved with files, not timings: the worker's generator waits for a
file that the test creates only once it has received the first item.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from openflash import (
    CpuLiveServerless,
    ExecutionTimeoutError,
    RemoteError,
    progress,
    remote,
)
from openflash.api.streams import Stream
from openflash.workers.streaming import WINDOW

pytestmark = pytest.mark.usefixtures("flash_home")


def _wait_for(path: Path, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


@remote(CpuLiveServerless(name="stream-sync"))
def tokens(gate: str, n: int):
    import os
    import time

    yield "t0"
    while not os.path.exists(gate):  # the caller has the first item before the rest is made
        time.sleep(0.01)
    for i in range(1, n):
        time.sleep(0.2)
        yield f"t{i}"


@remote(CpuLiveServerless(name="stream-async"))
async def atokens(gate: str, n: int):
    import asyncio
    import os

    yield 0
    while not os.path.exists(gate):
        await asyncio.sleep(0.01)
    for i in range(1, n):
        await asyncio.sleep(0.2)
        yield i


def test_a_sync_generator_streams_items_as_they_are_yielded(tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    async def main() -> list[str]:
        stream = tokens(str(gate), 5)
        assert isinstance(stream, Stream) and hasattr(stream, "__aiter__")
        got = []
        async for item in stream:
            got.append(item)
            gate.touch()  # only now may the worker produce the rest
        return got

    assert asyncio.run(main()) == ["t0", "t1", "t2", "t3", "t4"]


def test_an_async_generator_streams_items_as_they_are_yielded(tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    async def main() -> list[int]:
        got = []
        async for item in atokens(str(gate), 5):
            got.append(item)
            gate.touch()
        return got

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


@remote(CpuLiveServerless(name="stream-sync"))
def endless(trace: str):
    import time

    i = 0
    try:
        while True:
            with open(trace, "a") as f:
                f.write(f"{i}\n")
            yield i
            i += 1
            time.sleep(0.01)
    finally:
        with open(trace + ".closed", "w") as f:
            f.write("closed")


@remote(CpuLiveServerless(name="stream-async"))
async def aendless(trace: str):
    import asyncio

    try:
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.01)
    finally:
        with open(trace + ".closed", "w") as f:
            f.write("closed")


@pytest.mark.parametrize("fn", [endless, aendless], ids=["sync", "async"])
def test_breaking_out_of_the_loop_stops_the_generator_in_the_worker(fn, tmp_path: Path) -> None:
    trace = tmp_path / "trace"

    async def main() -> list[int]:
        got = []
        stream = fn(str(trace))
        async for item in stream:
            got.append(item)
            if len(got) == 3:
                break
        await stream.aclose()
        return got

    assert asyncio.run(main()) == [0, 1, 2]
    _wait_for(Path(str(trace) + ".closed"))  # its finally ran in the worker


def test_a_dropped_stream_stops_the_generator_too(tmp_path: Path) -> None:
    trace = tmp_path / "trace"

    async def main() -> None:
        async for item in endless(str(trace)):
            if item == 1:
                break  # no aclose: the stream is dropped with the loop

    asyncio.run(main())
    _wait_for(Path(str(trace) + ".closed"))


def test_the_worker_runs_at_most_a_window_ahead_of_the_caller(tmp_path: Path) -> None:
    trace = tmp_path / "trace"

    async def main() -> int:
        stream = endless(str(trace))
        first = await stream.__anext__()
        assert first == 0
        await asyncio.sleep(1.0)  # time enough for an unbounded producer to run far ahead
        produced = len(trace.read_text().split())
        await stream.aclose()
        return produced

    # Items sent ahead (the window), plus the one the caller took, plus one waiting for credit.
    assert asyncio.run(main()) <= WINDOW + 2


@remote(CpuLiveServerless(name="stream-sync"))
def fails_midway():
    yield 1
    yield 2
    raise ValueError("the third token is bad")


def test_an_exception_mid_stream_raises_after_the_items_before_it() -> None:
    got: list[int] = []

    async def main() -> None:
        async for item in fails_midway():
            got.append(item)

    with pytest.raises(RemoteError, match="the third token is bad"):
        asyncio.run(main())
    assert got == [1, 2]


@remote(CpuLiveServerless(name="stream-timeout", executionTimeoutMs=1500))
def stalls():
    import time

    yield "first"
    time.sleep(60)
    yield "never"


def test_the_execution_timeout_applies_to_the_whole_stream() -> None:
    got: list[str] = []

    async def main() -> None:
        async for item in stalls():
            got.append(item)

    with pytest.raises(ExecutionTimeoutError, match="executionTimeoutMs=1500"):
        asyncio.run(main())
    assert got == ["first"]


@remote(CpuLiveServerless(name="stream-sync"))
def counted(n: int) -> Iterator[int]:
    return iter(list(range(n)))  # not a generator function: its annotation says it streams


@remote(CpuLiveServerless(name="stream-sync"))
def hidden(n: int):
    return (i for i in range(n))  # a generator neither its body nor its annotation shows


def test_generators_are_detected_at_decoration_by_body_or_annotation() -> None:
    assert tokens._streams and atokens._streams and counted._streams
    assert not hidden._streams

    async def collect(stream: AsyncIterator[int]) -> list[int]:
        return [item async for item in stream]

    assert asyncio.run(collect(counted(3))) == [0, 1, 2]
    with pytest.raises(TypeError, match=r"generator function: its call streams.*async for"):
        asyncio.run(_awaited(counted(3)))
    with pytest.raises(RemoteError, match=r"returned a generator, but is not a generator .*yield"):
        asyncio.run(hidden(3))


async def _awaited(stream: object) -> object:
    return await stream  # type: ignore[misc]


@remote(CpuLiveServerless(name="stream-sync"))
def with_progress(n: int):
    for i in range(n):
        progress({"done": i, "of": n})
        yield i


def test_progress_reaches_the_stream_in_order_with_its_items() -> None:
    seen: list[object] = []

    async def main() -> tuple[list[int], object]:
        stream = with_progress(3)
        stream.on_progress = seen.append
        items = [item async for item in stream]
        return items, stream.progress

    items, last = asyncio.run(main())
    assert items == [0, 1, 2]
    assert seen == [{"done": 0, "of": 3}, {"done": 1, "of": 3}, {"done": 2, "of": 3}]
    assert last == {"done": 2, "of": 3}


@remote(CpuLiveServerless(name="stream-class"))
class Generator:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def words(self, n: int):
        for i in range(n):
            yield f"{self.prefix}{i}"

    async def awords(self, n: int):
        for i in range(n):
            yield f"{self.prefix}a{i}"

    def plain(self) -> str:
        return self.prefix


def test_generator_methods_stream() -> None:
    model = Generator("w")

    async def main() -> tuple[list[str], list[str], str]:
        words = [w async for w in model.words(3)]
        awords = [w async for w in model.awords(2)]
        return words, awords, await model.plain()

    assert asyncio.run(main()) == (["w0", "w1", "w2"], ["wa0", "wa1"], "w")


@remote(CpuLiveServerless(name="stream-outer"))
async def nested_consumer() -> list:
    return await with_progress(2)  # a generator function, called from a worker


def test_a_nested_call_of_a_generator_function_fails_clearly() -> None:
    with pytest.raises(
        Exception, match=r"with_progress\(\) is a generator function, and a worker's nested call"
    ) as caught:
        asyncio.run(nested_consumer())
    assert "async for item in" in str(caught.value)


def test_a_transport_that_cannot_stream_says_so() -> None:
    # An Executor run without a worker's frame channel (send is None) cannot stream; every
    # backend's workers have one (Ray's relays its frames: tests/backends/test_ray.py).
    import cloudpickle

    from openflash.workers import child, protocol

    def gen():
        yield 1

    async def main() -> protocol.ErrorInfo:
        executor = child.Executor(1)
        payload = protocol.CallPayload(
            protocol.OP_FUNCTION,
            "t",
            cloudpickle.dumps(gen),
            "",
            cloudpickle.dumps(((), {})),
            None,
            None,
            True,
        )
        parts = await executor.reply(1, protocol.dumps(tuple(payload)))  # a frame's parts
        frame = b"".join(bytes(part) for part in parts)
        return protocol.decode_error(frame[protocol.HEADER.size :])

    info = asyncio.run(main())
    assert info["type"] == "TypeError"
    assert "this worker has no frame channel to stream its items on" in info["message"]
