"""A worker's warm calls of plain functions run on the thread that read them (call_threads.py):
no hand-off to the loop and back, and everything else that goes through a worker still works
(concurrent calls that wait on each other, errors, awaitables and generators returned by plain
functions, crashes, cancellation, frames larger than the socket's buffer). Real worker
processes in a bare environment, through the pool."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import Any

import cloudpickle
import pytest
from tests.workers.test_pool import result, run

from openflash.errors import WorkerCrashedError
from openflash.workers import protocol
from openflash.workers.calls import Call
from openflash.workers.pool import Pool, PoolConfig
from openflash.workers.port import WorkerSpec

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def call_of(fn: Any, *args: Any) -> Call:
    """A call whose target is the function itself: the worker keeps it after its first call."""
    blob = cloudpickle.dumps(fn)
    return Call(
        protocol.OP_FUNCTION,
        f"{fn.__name__}-{hash(blob)}",
        blob,
        cloudpickle.dumps((args, {})),
        label=f"{fn.__name__}()",
        source=__file__,
    )


def thread_name() -> str:
    import threading

    return threading.current_thread().name


def test_a_warm_plain_call_runs_on_the_thread_that_read_it(bare_spec: WorkerSpec) -> None:
    async def body(pool: Pool) -> list[str]:
        return [await result(pool, call_of(thread_name)) for _ in range(3)]

    first, *warm = run(bare_spec, PoolConfig("p"), body)
    # The first call brings the function: the loop loads it and runs it in its thread pool.
    assert first.startswith("openflash-call")
    assert warm == ["openflash-reader", "openflash-reader"]


def meet(role: str) -> str:
    """``wait`` blocks until a ``set`` call has run in the same worker."""
    import builtins
    import threading

    if not hasattr(builtins, "met"):
        builtins.met = threading.Event()
    if role == "set":
        builtins.met.set()
    elif role == "wait" and not builtins.met.wait(20):
        raise RuntimeError("the second call never reached the worker")
    return threading.current_thread().name


def test_a_plain_call_waiting_on_another_does_not_stop_the_reading(
    bare_spec: WorkerSpec,
) -> None:
    async def body(pool: Pool) -> list[str]:
        await result(pool, call_of(meet, "warm"))
        waiting = asyncio.ensure_future(result(pool, call_of(meet, "wait")))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        setter = await result(pool, call_of(meet, "set"))
        return [await waiting, setter]

    names = run(bare_spec, PoolConfig("p", workers_max=1, max_concurrency=2), body)
    assert names == ["openflash-reader", "openflash-reader"]


def fails(what: str) -> Any:
    if what == "raise":
        raise ValueError("bad value 42")
    if what == "coroutine":
        return asyncio.sleep(0, result="awaited")  # a plain function returning an awaitable
    if what == "generator":
        return iter([1, 2])  # not a generator function: its caller does not stream
    if what == "die":
        os._exit(7)
    return "ok"


def test_warm_plain_calls_answer_errors_awaitables_and_generators(bare_spec: WorkerSpec) -> None:
    async def body(pool: Pool) -> dict[str, Any]:
        assert await result(pool, call_of(fails, "ok")) == "ok"
        raised = await pool.submit(call_of(fails, "raise"))
        generator = await pool.submit(call_of(fails, "generator"))
        return {
            "raised": (raised.ok, protocol.decode_error(raised.payload)),
            "coroutine": await result(pool, call_of(fails, "coroutine")),
            "generator": (generator.ok, protocol.decode_error(generator.payload)),
            "after": await result(pool, call_of(fails, "ok")),
        }

    got = run(bare_spec, PoolConfig("p"), body)
    ok, info = got["raised"]
    assert not ok and info["type"] == "ValueError" and info["message"] == "bad value 42"
    assert "in fails" in info["traceback"]
    assert got["coroutine"] == "awaited"
    ok, info = got["generator"]
    assert not ok and info["type"] == "TypeError" and "not a generator function" in info["message"]
    assert got["after"] == "ok"


def test_a_worker_dying_in_a_warm_plain_call_fails_it_at_once(bare_spec: WorkerSpec) -> None:
    async def body(pool: Pool) -> tuple[WorkerCrashedError, str]:
        await result(pool, call_of(fails, "ok"))
        with pytest.raises(WorkerCrashedError) as info:
            await result(pool, call_of(fails, "die"))
        return info.value, await result(pool, call_of(fails, "ok"))

    error, after = run(bare_spec, PoolConfig("p"), body)
    assert error.exit_code == 7 and after == "ok"


def naps(seconds: float) -> int:
    import time

    time.sleep(seconds)
    return os.getpid()


def test_a_cancelled_warm_plain_call_finishes_and_its_worker_stays(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_CANCEL_GRACE_S", "30")

    async def body(pool: Pool) -> tuple[int, int]:
        pid = await result(pool, call_of(naps, 0))
        running = asyncio.ensure_future(result(pool, call_of(naps, 0.5)))
        await asyncio.sleep(0.1)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        return pid, await result(pool, call_of(naps, 0))

    before, after = run(bare_spec, PoolConfig("p"), body)
    assert before == after


def echo(value: Any) -> Any:
    return value


def test_frames_larger_than_the_socket_buffer_go_both_ways(bare_spec: WorkerSpec) -> None:
    with socket.socket(socket.AF_UNIX) as probe:
        buffer = probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    big = os.urandom(4 * buffer + 12345)
    other = bytearray(os.urandom(3 * buffer))

    async def body(pool: Pool) -> list[Any]:
        await result(pool, call_of(echo, 0))
        # The argument is read into one buffer by the reading thread, the result written whole
        # from it (sendmsg, in as many pieces as the socket takes).
        reply = await pool.submit(call_of(echo, (big, other)))
        assert reply.ok
        return list(protocol.loads(reply.payload))

    back, back_other = run(bare_spec, PoolConfig("p"), body)
    assert back == big and back_other == other
