"""The worker's reading threads (call_threads.py) when things go wrong: a call handed off that
ends after the next call started, a call's thread or a write that fails past the call's own
error handling. The Reader driven over a real socketpair, a Wire on one, a real worker process."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from typing import Any

import pytest
from tests.workers.test_call_threads import Child, naps_then_notes

from openflash.workers import call_threads, protocol, shared_memory


def test_a_handed_off_call_ending_after_the_next_started_does_not_read_beside_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Call A hands the reading off (as a nested call does, or the standby) and its reply goes
    out; the pool sends B at once, which the thread that took the reading runs keeping it. A's
    thread, ending after B started, must not take itself for the reader: C, sent while B runs,
    is read by B's thread once B ends (the standby is set to an hour here)."""
    monkeypatch.setattr(call_threads, "STANDBY_S", 3600.0)
    events: list[str] = []
    a_replied, b_started, b_may_end = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        reader.hand_off()
        a_replied.set()  # its reply written: the pool sends B
        if not b_started.wait(30):
            events.append("B never started")
        events.append("A ends")

    def b() -> None:
        events.append("B runs")
        b_started.set()
        if not b_may_end.wait(30):
            events.append("B never let go")
        events.append("B ends")

    def c() -> None:
        events.append("C runs")

    calls = {b"a": a, b"b": b, b"c": c}

    async def main() -> None:
        nonlocal reader
        loop = asyncio.get_running_loop()
        reader = call_threads.Reader(
            theirs, loop, lambda frame: None, lambda frame: calls[bytes(frame.payload)], 1
        )
        reader.start()
        ours.sendall(protocol.encode(protocol.CALL, 1, b"a"))
        await loop.run_in_executor(None, a_replied.wait, 30)
        ours.sendall(protocol.encode(protocol.CALL, 2, b"b"))
        while "A ends" not in events:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # A's thread past its call (a wrong reader would read C now)
        ours.sendall(protocol.encode(protocol.CALL, 3, b"c"))
        await asyncio.sleep(0.3)
        b_may_end.set()
        while "C runs" not in events:
            await asyncio.sleep(0.01)
        ours.close()
        await asyncio.wait_for(reader.closed, 30)
        assert reader.failure is None  # its pool ended it: the worker exits 0

    ours, theirs = socket.socketpair()
    reader: Any = None
    with theirs:
        asyncio.run(main())
    assert events == ["B runs", "A ends", "B ends", "C runs"]


@pytest.mark.parametrize("max_calls", [1, 2])
def test_a_call_thread_that_fails_past_the_call_ends_the_worker(
    max_calls: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """What escapes a call's run (its reply not written: shared_memory.send_result failing,
    say; a RuntimeError stands in) neither kills the reading nor leaves its caller waiting: it
    is reported on stderr and the worker ends, whether the call kept the reading (one call at
    a time) or not."""

    def fails() -> None:
        raise RuntimeError("the reply could not be written")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reader = call_threads.Reader(
            theirs, loop, lambda frame: None, lambda frame: fails, max_calls
        )
        reader.start()
        ours.sendall(protocol.encode(protocol.CALL, 1, b"x"))
        await asyncio.wait_for(reader.closed, 30)
        failures.append(reader.failure)

    failures: list[BaseException | None] = []
    ours, theirs = socket.socketpair()
    with ours, theirs:
        asyncio.run(main())
    # What ended it is kept: the worker exits 1, not 0 as when its pool ends it (child.serve).
    assert isinstance(failures[0], RuntimeError)
    err = capsys.readouterr().err
    assert "the worker failed outside a call; ending" in err
    assert "RuntimeError: the reply could not be written" in err


def test_a_warm_call_whose_reply_meets_a_gone_socket_lets_the_worker_end() -> None:
    """The pool stops reading (its side shut for reading: the worker's writes fail with EPIPE,
    as on a socket reset) while a warm call runs; the worker still reads the socket's end and
    exits by itself, code 0."""
    child = Child()
    try:
        child.call(1, naps_then_notes, 0, "/dev/null")
        child.answer()
        child.sock.shutdown(socket.SHUT_RD)
        child.call(2, naps_then_notes, 0, "/dev/null")  # warm: its thread keeps the reading
        child.call(3, naps_then_notes, 0, "/dev/null")
        child.sock.close()
        assert child.process.wait(timeout=60) == 0
    finally:
        child.process.kill()
        child.process.wait()
        child.sock.close()


def test_a_frame_from_the_loop_that_fails_to_go_out_ends_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large frame from the loop is written from a thread; a failure there that is not the
    socket being gone (shared_memory.send_result failing: a RuntimeError stands in, injected)
    is told to ``Wire.failed`` (the worker ends), not dropped; the socket gone is not."""

    def broken(*args: Any) -> bool:
        raise RuntimeError("no result through shared memory")

    monkeypatch.setattr(shared_memory, "send_result", broken)
    failures: list[BaseException] = []
    large = protocol.encode(protocol.RESULT, 1, b"x" * (1 << 17))

    async def main() -> None:
        wire = call_threads.Wire(theirs)
        wire.shared_min = 1
        wire.failed = failures.append
        await asyncio.wait_for(wire.send_parts([large]), 30)
        assert [str(e) for e in failures] == ["no result through shared memory"]
        monkeypatch.undo()  # now the socket gone: the worker is ending, nothing to tell
        ours.close()
        await asyncio.wait_for(wire.send_parts([large]), 30)
        await asyncio.wait_for(wire.drain(), 30)

    ours, theirs = socket.socketpair()
    theirs.setblocking(True)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    with theirs:
        asyncio.run(main())
    assert len(failures) == 1


def test_a_large_result_the_loop_sends_before_another_frame_goes_through_shared_memory() -> None:
    """The loop's outbox writes what one iteration sent together: a large RESULT followed by a
    small frame still goes through a memfd (one descriptor, few bytes on the socket), and the
    small frame comes after it."""
    large = protocol.encode(protocol.RESULT, 1, b"x" * (1 << 18))
    small = protocol.encode(protocol.PROGRESS, 2, b"after")
    got: list[bytes] = []
    fds: list[int] = []

    def drain() -> None:
        while True:
            data, received, _, _ = socket.recv_fds(ours, 1 << 20, 4)
            fds.extend(received)
            if not data:
                return
            got.append(data)

    async def main() -> None:
        wire = call_threads.Wire(theirs)
        wire.shared_min = 1 << 16
        await asyncio.gather(wire.send_parts([large]), wire.send_parts([small]))
        await wire.drain()

    ours, theirs = socket.socketpair()
    reading = threading.Thread(target=drain)
    reading.start()
    with ours:
        with theirs:
            asyncio.run(main())
        reading.join(30)
    for fd in fds:
        os.close(fd)
    data = b"".join(got)
    assert len(fds) == 1 and len(data) < 1 << 12
    assert data.endswith(small)
