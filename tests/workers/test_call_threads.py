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


# One call at a time (MAX_CONCURRENCY 1): the thread that read a call keeps the reading while it
# runs it (call_threads.Reader); what must be read meanwhile is, once the reading is handed off.


class Child:
    """A worker process (``python -m openflash.workers.child FD 1``, this interpreter) driven
    over a socketpair frame by frame, as a pool would."""

    def __init__(self, max_concurrency: int = 1, stderr: Any = None) -> None:
        import subprocess

        self.sock, theirs = socket.socketpair()
        env = dict(os.environ, OPENFLASH_PARENT_PID=str(os.getpid()))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openflash.workers.child",
                str(theirs.fileno()),
                str(max_concurrency),
            ],
            pass_fds=(theirs.fileno(),),
            env=env,
            stderr=stderr,
        )
        theirs.close()
        self.sock.settimeout(60)
        assert self.read()[0] == protocol.READY

    def read(self) -> tuple[int, int, bytes]:
        header = self.exactly(protocol.HEADER.size)
        kind, call_id, size = protocol.HEADER.unpack(header)
        return kind, call_id, self.exactly(size)

    def exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError("the worker closed its socket")
            data += chunk
        return data

    def call(self, call_id: int, fn: Any, *args: Any, first: bool = False) -> None:
        """Send a CALL of ``fn`` (``first``: with the function, which the worker then keeps)."""
        self.sock.sendall(b"".join(bytes(part) for part in self.frame(call_id, fn, args, first)))

    def frame(self, call_id: int, fn: Any, args: tuple[Any, ...], first: bool) -> list[Any]:
        from openflash.workers import pickling

        payload = protocol.CallPayload(
            protocol.OP_FUNCTION,
            fn.__name__,
            cloudpickle.dumps(fn) if first or call_id == 1 else None,
            "",
            pickling.pack((args, {}), None),
            None,
        )
        return protocol.encode_call(call_id, payload)

    def answer(self) -> Any:
        return self.answer_of()[1]

    def answer_of(self) -> tuple[int, Any]:
        """The next RESULT: its call id and value."""
        while True:
            kind, call_id, payload = self.read()
            if kind == protocol.RESULT:
                return call_id, protocol.loads(payload)
            assert kind in (protocol.IMPORTED, protocol.PROGRESS), kind


def naps_then_notes(seconds: float, note: str) -> str:
    """Notes ``started`` in the file ``note``, sleeps, then notes ``finished``."""
    import threading
    import time

    with open(note, "a") as f:
        f.write("started\n")
    time.sleep(seconds)
    with open(note, "a") as f:
        f.write("finished\n")
    return threading.current_thread().name


@pytest.mark.parametrize("how", ["shutdown", "close"])
def test_a_worker_running_a_long_warm_call_ends_when_its_pool_lets_go(
    how: str, tmp_path: Any
) -> None:
    import time

    note = tmp_path / "note"
    child = Child()
    try:
        child.call(1, naps_then_notes, 0, str(note))
        first = child.answer()
        child.call(2, naps_then_notes, 0, str(note))
        assert child.answer() == "openflash-reader" != first  # warm: it keeps the reading
        note.unlink()
        child.call(3, naps_then_notes, 600, str(note))
        while not note.exists():  # the call runs
            time.sleep(0.01)
        if how == "shutdown":
            child.sock.sendall(protocol.encode(protocol.SHUTDOWN))
        else:
            child.sock.close()
        # It exits by itself (code 0, not killed), its call still running.
        assert child.process.wait(timeout=60) == 0
        assert note.read_text() == "started\n"
    finally:
        child.process.kill()
        child.process.wait()
        child.sock.close()


def test_warm_calls_one_at_a_time_all_run_on_one_thread() -> None:
    child = Child()
    try:
        child.call(1, thread_ident)
        child.answer()
        idents = set()
        for call_id in range(2, 40):
            child.call(call_id, thread_ident)
            idents.add(child.answer())
        # The thread that reads each call runs it and reads the next: no other thread takes
        # turns with it (one that queued for the reading would have read every other call).
        assert len(idents) == 1
    finally:
        child.sock.close()
        child.process.wait(timeout=60)


def thread_ident() -> tuple[str, int]:
    import threading

    return threading.current_thread().name, threading.get_ident()


def test_a_kept_call_that_hands_off_lets_another_thread_read_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A nested call's wait (channel.py's ``before_wait``) hands the reading off: the frame that
    comes meanwhile reaches the loop while the call still runs, long before the standby would
    take over (set to an hour here)."""
    import threading

    from openflash.workers import call_threads

    monkeypatch.setattr(call_threads, "STANDBY_S", 3600.0)
    events: list[str] = []
    arrived = threading.Event()

    def runs() -> None:
        events.append("call runs")
        reader.hand_off()
        events.append("handed off")
        if not arrived.wait(30):
            events.append("nothing read meanwhile")
        events.append("call ends")

    def to_loop(frame: protocol.Frame) -> None:
        events.append(f"loop got {protocol.KIND_NAMES[frame.kind]}")
        arrived.set()

    async def main() -> None:
        nonlocal reader
        loop = asyncio.get_running_loop()
        reader = call_threads.Reader(theirs, loop, to_loop, lambda frame: runs, 1)
        reader.start()
        ours.sendall(protocol.encode(protocol.CALL, 1, b"x"))
        while "handed off" not in events:
            await asyncio.sleep(0.01)
        ours.sendall(protocol.encode(protocol.NESTED_REPLY, 1, b"reply"))
        while "call ends" not in events:
            await asyncio.sleep(0.01)
        ours.close()
        await asyncio.wait_for(reader.closed, 30)

    ours, theirs = socket.socketpair()
    reader: Any = None
    with theirs:
        asyncio.run(main())
    assert events == ["call runs", "handed off", "loop got NESTED_REPLY", "call ends"]


def test_a_warm_plain_call_past_its_execution_timeout_fails_and_the_next_one_runs(
    bare_spec: WorkerSpec,
) -> None:
    from openflash.errors import ExecutionTimeoutError

    async def body(pool: Pool) -> tuple[int, int]:
        first = await result(pool, call_of(naps, 0))  # loaded; the next ones are warm
        assert await result(pool, call_of(naps, 0)) == first
        with pytest.raises(ExecutionTimeoutError):
            await result(pool, call_of(naps, 600))
        return first, await result(pool, call_of(naps, 0))

    hung, after = run(bare_spec, PoolConfig("p", execution_timeout=3), body)
    assert after != hung  # its worker was replaced


async def async_where(x: int) -> tuple[int, str, bool]:
    """Where it runs, and whether the loop reads the socket meanwhile (a reader registered with
    its selector: call_threads.Reader's ``_loop_read``)."""
    import threading

    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    handles = [key.data[0] for key in selector.get_map().values() if key.data]
    reads = any(getattr(h._callback, "__name__", "") == "_loop_read" for h in handles if h)
    return x, threading.current_thread().name, reads


def plain_where(x: int) -> tuple[int, str]:
    import threading

    return x, threading.current_thread().name


@pytest.mark.parametrize("max_concurrency", [1, 4])
def test_the_loop_reads_while_it_runs_the_calls_and_gives_the_reading_back(
    max_concurrency: int,
) -> None:
    """Async calls (the loop reads them, several that arrived together at once), then a plain
    one (the reading goes back to the threads, one of which runs it), then async again, then
    SHUTDOWN read by the loop: every answer, in order where one call is sent at a time."""
    child = Child(max_concurrency)
    try:
        child.call(1, async_where, 1, first=True)
        assert child.answer() == (1, "MainThread", True)
        child.call(2, plain_where, 2, first=True)
        assert child.answer_of() == (2, (2, "openflash-call_0"))  # its first call: the loop's
        together = [child.frame(i, async_where, (i,), False) for i in range(10, 20)]
        child.sock.sendall(b"".join(bytes(part) for frame in together for part in frame))
        answers = dict(child.answer_of() for _ in range(10))
        assert answers == {i: (i, "MainThread", True) for i in range(10, 20)}
        child.call(3, plain_where, 3)
        assert child.answer() == (3, "openflash-reader")
        child.call(4, async_where, 4)
        assert child.answer() == (4, "MainThread", True)
        child.call(5, plain_where, 5)
        assert child.answer() == (5, "openflash-reader")
        child.call(6, async_where, 6)
        assert child.answer() == (6, "MainThread", True)
        child.sock.sendall(protocol.encode(protocol.SHUTDOWN))
        assert child.process.wait(timeout=60) == 0
    finally:
        child.process.kill()
        child.process.wait()
        child.sock.close()


async def echo_async(value: Any) -> Any:
    return value


@pytest.mark.parametrize("in_flight", [1, 3])
def test_large_results_of_async_functions_go_back_whole(in_flight: int, tmp_path: Any) -> None:
    """Written from the loop's outbox by a thread (too large for the loop), in order with the
    small frames sent around them, and nothing going wrong in the worker meanwhile."""
    with socket.socket(socket.AF_UNIX) as probe:
        buffer = probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    values = [os.urandom(3 * buffer + i) if i % 2 == 0 else i for i in range(in_flight * 2)]
    errors = tmp_path / "stderr"
    with errors.open("w") as stderr:
        child = Child(in_flight, stderr=stderr)
    try:
        child.call(1, echo_async, 0, first=True)
        assert child.answer() == 0
        answers: dict[int, Any] = {}
        for start in range(0, len(values), in_flight):
            for i in range(start, start + in_flight):
                child.call(10 + i, echo_async, values[i])
            answers.update(child.answer_of() for _ in range(in_flight))
        assert answers == {10 + i: value for i, value in enumerate(values)}
    finally:
        child.sock.close()
        child.process.wait(timeout=60)
    assert child.process.returncode == 0
    assert "Traceback" not in errors.read_text()
