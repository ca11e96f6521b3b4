"""A worker lent to a script's own event loop: its warm plain calls run there, no thread hop.

A script's loop (``asyncio.run``) is not the runtime's, which runs on a thread of its own
(runtime/core.py): a call hops there and back (runtime/hops.py), two thread crossings per call.
When such a call's reply leaves its worker idle with nothing queued, the runtime *lends* that
worker to the caller's loop: on the runtime's loop it stops reading the worker's socket
(``pause_reading``, with nothing buffered either way), marks it lent (``Worker.lane``: no other
call is sent to it) and tells the caller's loop. There, a ``Lane`` writes the next plain calls'
CALL frames on the socket itself (a duplicate of its descriptor), reads their RESULT and ERROR
frames (``add_reader``) and resolves their callers' futures: no crossing per call.

Only RESULT and ERROR frames of the lane's own calls are taken there. Anything else (a nested
call, an item, progress, an import record, RETIRE, an unknown call, a large or shared-memory
result), the socket's end or an error, an execution timeout coming due, a cancelled call, or a
frame that could not be written whole hands the worker *back*: every unread byte is fed to the
pool's reader, the lane's calls become the pool's (each answered across threads as in hops.py),
reading resumes, and the pool does what it does for any call (nested calls relayed, a dead
worker's calls failed with WorkerCrashedError, a call past its execution timeout failed and its
worker killed, a cancelled call cancelled in its worker: workers/cancels.py).

The runtime takes a lent worker back (``Lane.reclaim``) when it needs it: a call queued with no
worker free, its idle timer, a lane call past its execution timeout (watched on the runtime's
loop too: the caller's may be blocked), a stop of the worker or its pool, a released instance.
One lock makes the lane's state the lender's or the borrower's, never both, so the runtime takes
it back at once whatever the caller's loop does (it may have closed: ``asyncio.run`` closes its
loop, and the next ``asyncio.run`` then uses the same warm worker). A worker that died while its
loop read nothing (closed, or blocked) is seen dead as it is taken back, before a call is sent to
it. A call the lane cannot take (its worker busy, a function the worker does not hold yet, a
stream, large arguments, a call a server notes) hops as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import select
import socket
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from openflash.errors import FlashError
from openflash.runtime import hops, spins
from openflash.workers import cancels, payloads, protocol, shared_memory
from openflash.workers.call_frames import call_parts
from openflash.workers.calls import Call, Reply
from openflash.workers.lifecycle import Worker, WorkerState
from openflash.workers.protocol import HEADER

__all__ = ["Lane", "lanes_of"]

_REPLIES = frozenset({protocol.RESULT, protocol.ERROR})
_ANCILLARY = socket.CMSG_SPACE(16)
_READ = 1 << 18
_GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL


class _State(enum.Enum):
    LENT = "lent"  # the borrower's (the caller's loop)
    RETURNED = "returned"  # the lender's again (the runtime's loop)


@dataclass(eq=False, slots=True)
class _Lent:
    """One call of a lane: its call id on the worker, its caller's future, when it was sent
    (``time.monotonic``, the clock of every asyncio loop here), and what happened to it."""

    call: Call
    call_id: int
    waiter: asyncio.Future[Reply]
    sent_at: float
    timer: asyncio.TimerHandle | None = None
    cancelled: bool = False
    hop: hops._Hop | None = None  # once the pool has it: how its reply crosses back


#: The attribute of a loop that holds its lanes, by pool (read and changed on that loop, or
#: once it is closed): they go with the loop, whenever it is collected.
_LANES = "_openflash_lanes"


class Lane:
    """A worker of ``pool`` lent to ``loop`` by the runtime's loop ``home``."""

    def __init__(
        self, pool: Any, worker: Worker, loop: asyncio.AbstractEventLoop, sock: socket.socket
    ) -> None:
        handle = worker.handle
        assert handle is not None
        self.pool = pool
        self.worker = worker
        self.loop = loop
        self.home = asyncio.get_running_loop()
        self.transport: Any = handle.writer.transport
        self.sock = sock  # a duplicate of the worker's socket: closed on ``loop``
        self.fd = sock.fileno()
        # Closed with the lane at the latest (its loop closed before it could close it there).
        weakref.finalize(self, sock.close)
        self.descriptors = getattr(handle, "descriptors", None)
        self.loaded = frozenset(worker.loaded)
        self.room = pool.config.max_concurrency
        self.timeout = pool.config.execution_timeout
        self.lock = threading.Lock()
        self.state = _State.LENT
        self.in_flight: dict[int, _Lent] = {}
        self.buffer = bytearray()
        self.unsent = b""
        #: Its calls answered on ``loop`` (the pool's ``lane_calls`` once it is back), and when
        #: it last answered one (``loop.time()``).
        self.calls = 0
        self.last_used = 0.0
        self._handoff: list[_Lent] = []
        self._open = False
        #: Its callers' busy watch for their replies (lending.py ``send``).
        self.spin = spins.ReplySpin(loop, self.fd, self._readable)
        #: The lender's watch on its calls' execution timeout (``_watch``): kept whatever the
        #: borrower's loop does (blocked, closed).
        self.watch = self.home.call_later(self.timeout, self._watch) if self.timeout else None

    @property
    def lent(self) -> bool:
        """Whether the borrower holds it still."""
        return self.state is _State.LENT

    # On the borrower's loop.

    def open(self) -> None:
        """Start reading the worker's socket on this loop (the lender's call_soon_threadsafe)."""
        with self.lock:
            if self.state is _State.LENT:
                self.loop.add_reader(self.fd, self._readable)
                self._open = True
                lanes = lanes_of(self.loop)
                if lanes is None:
                    lanes = {}
                    setattr(self.loop, _LANES, lanes)
                lanes[self.pool] = self
                return
        self.sock.close()  # taken back before it opened

    def send(self, call: Call) -> asyncio.Future[Reply] | None:
        """``call``'s CALL frame written on the worker's socket, and the future of its reply
        (resolved here as it comes, or by the pool if the worker is handed back first); None
        when the lane cannot take it (given back, full, or a function the worker lacks)."""
        with self.lock:
            if (
                self.state is not _State.LENT
                or len(self.in_flight) >= self.room
                or call.target not in self.loaded
            ):
                return None
            call_id = next(self.pool._call_ids)
            # One part, bytes: a small call's frame (``plain``).
            frame: bytes = call_parts(call, call_id, False)[0]  # type: ignore[assignment]
            try:
                sent = self.sock.send(frame)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # its socket gone: the pool finds out why, the call hops
                self._hand_back()
                return None
            loop = self.loop
            entry = _Lent(call, call_id, loop.create_future(), loop.time())
            self.in_flight[call_id] = entry
            call.pool = self.pool
            call.running = True
            call.worker_pid = self.worker.pid
            call.waited = 0.0
            if sent < len(frame):  # the rest is written by the pool, before anything else
                self.unsent = frame[sent:]
                self._hand_back()
            elif self.timeout:
                entry.timer = loop.call_later(self.timeout, self._overdue)
        return entry.waiter

    def cancel(self, waiter: asyncio.Future[Reply], call: Call) -> None:
        """The await of ``waiter`` (``call``'s reply) was cancelled: the call is cancelled, in
        its worker too (by the pool: the worker is handed back for it)."""
        with self.lock:
            entry = next((e for e in self.in_flight.values() if e.waiter is waiter), None)
            if entry is not None:  # still here: the pool cancels it (cancels.py)
                entry.cancelled = True
                self._hand_back()
                self._close()
                return
            entry = next((e for e in self._handoff if e.waiter is waiter), None)
            if entry is None:
                return  # answered already
            hop = entry.hop
            if hop is None:
                entry.cancelled = True  # the pool cancels it as it takes it (``reclaim``)
                return
        with contextlib.suppress(RuntimeError):  # the runtime's loop closed
            self.home.call_soon_threadsafe(hop.cancel, call)

    def _readable(self) -> None:
        done: list[tuple[_Lent, Reply]] = []
        with self.lock:
            if self.state is not _State.LENT:
                self._close()
                return
            try:
                if self.descriptors is None:
                    data = self.sock.recv(_READ)
                else:  # a result's file may come with its bytes: kept for the pool
                    data, ancillary, _, _ = self.sock.recvmsg(_READ, _ANCILLARY)
                    if ancillary:
                        self.descriptors.extend(shared_memory.attached(ancillary))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # its end: the pool learns why
                self._hand_back()
                self._close()
                return
            if self.buffer:  # the start of a reply came before
                self.buffer += data
                data = bytes(self.buffer)
                self.buffer.clear()
            offset, end, refused = 0, len(data), False
            while end - offset >= HEADER.size:
                kind, call_id, size = HEADER.unpack_from(data, offset)
                start = offset + HEADER.size
                entry = self.in_flight.get(call_id)
                if kind not in _REPLIES or size >= payloads.PREALLOCATE or entry is None:
                    refused = True  # not a reply the lane takes: the pool reads it
                    break
                if start + size > end:
                    break  # the rest of a small reply comes
                payload = data[start : start + size]
                if payload[:4] == shared_memory.MARK:
                    refused = True  # its result is in shared memory: the pool maps it
                    break
                offset = start + size
                del self.in_flight[call_id]
                done.append((entry, Reply(kind == protocol.RESULT, payload)))
            if offset < end:
                self.buffer += data[offset:]  # handed back with the worker, or completed later
            if refused:
                self._hand_back()
                self._close()
            if done:
                self.calls += len(done)
                self.last_used = now = self.loop.time()
                self.spin.replied(now, done)
        for entry, reply in done:
            if entry.timer is not None:
                entry.timer.cancel()
            if not entry.waiter.done():
                entry.waiter.set_result(reply)

    def _overdue(self) -> None:
        """A call's execution timeout came due here: the pool fails it and kills its worker."""
        with self.lock:
            if self.state is _State.LENT:
                self._hand_back()
                self._close()

    def detach(self) -> None:
        """Stop reading here (the lender took the worker back)."""
        with self.lock:
            self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.fd)
            self._forget()
        for entry in self._handoff:
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
        self.sock.close()

    def _forget(self) -> None:
        lanes = lanes_of(self.loop)
        if lanes is not None and lanes.get(self.pool) is self:
            del lanes[self.pool]

    # Either side, holding the lock.

    def _return(self) -> bool:
        """The worker is the lender's from now on: nothing more is read or written here."""
        if self.state is not _State.LENT:
            return False
        self.state, self.spin.returned = _State.RETURNED, True  # a spin stops
        self._handoff = list(self.in_flight.values())
        self.in_flight = {}
        return True

    def _hand_back(self) -> None:
        """From the borrower: the worker returned, the lender told to take it (``reclaim``)."""
        if not self._return():
            return
        try:
            self.home.call_soon_threadsafe(self.reclaim)
        except RuntimeError:  # the runtime stopped: its stop failed every call it held
            self._fail_here()

    def _fail_here(self) -> None:
        error = FlashError(
            f"endpoint {self.pool.config.name!r} was shut down before the call finished",
            hint="the openflash runtime is stopping",
        )
        for entry in self._handoff:
            if not entry.waiter.done():
                entry.waiter.set_exception(error)

    # On the lender's loop.

    def _watch(self) -> None:
        """A lane call past its execution timeout is taken back (the pool fails it and kills
        its worker) even when the borrower's loop cannot see its own timer come due."""
        self.watch = None
        if self.worker.lane is not self:
            return
        now = self.home.time()  # time.monotonic, as the borrower's ``sent_at``
        with self.lock:
            due = min((e.sent_at for e in self.in_flight.values()), default=now) + self.timeout
        if due <= now:
            self.reclaim()
        else:
            self.watch = self.home.call_later(due - now, self._watch)

    def reclaim(self) -> None:
        """Take the worker back: its calls the pool's, its unread bytes its reader's."""
        worker, pool = self.worker, self.pool
        if worker.lane is not self:
            return  # taken back already
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        with self.lock:
            self._return()
            handoff, unread, unsent = self._handoff, bytes(self.buffer), self.unsent
            self.buffer.clear()
            opened = self._open
        worker.lane = None
        pool.lane_calls += self.calls
        if not opened:
            self.sock.close()  # never watched there (``open`` sees it returned and stops)
        else:
            try:
                self.loop.call_soon_threadsafe(self.detach)
            except RuntimeError:  # its loop closed: nothing reads there any more
                self._forget()
                self.sock.close()
        handle = worker.handle
        assert handle is not None
        writer, loop = handle.writer, asyncio.get_running_loop()
        if unsent:
            writer.write(unsent)
        for entry in handoff:
            call = entry.call
            hop = hops._Hop(self.loop, entry.waiter)
            hop.pool = pool
            call.future = hop.future = hops.Relayed(hop, loop)
            call.wire = (writer.write, entry.call_id)
            worker.in_flight[entry.call_id] = call
            with self.lock:
                entry.hop = hop
                cancelled = entry.cancelled
            if cancelled:
                call.future.cancel()
                cancels.cancelled(pool, call)
            elif self.timeout:
                left = max(0.0, entry.sent_at + self.timeout - loop.time())
                call.timer = loop.call_later(left, pool._on_timeout, worker, entry.call_id)
        if worker.state is WorkerState.READY and _ended(self.transport):
            # Nobody read it while lent (its loop closed, or not running): its death is seen
            # now, not by the next call sent to it; its reader then finds the end (pool._exited).
            worker.state, worker.ended_lent = WorkerState.STOPPING, True
        since = max(worker.idle_since, self.last_used)
        if not worker.in_flight:
            pool._arm_idle(worker)
        worker.idle_since = since  # idle since its last call, not since now
        self.transport.resume_reading()
        if unread:
            handle.reader.feed_data(unread)  # replies among them settle now (replies.py)


def _ended(transport: Any) -> bool:
    """Whether the worker's end of ``transport``'s socket is closed (it exited), polled: nothing
    read, not even peeked (a peek would take a copy of a result's descriptor on its way)."""
    sock = getattr(transport, "_sock", None)  # None once it is closed: its reader saw the end
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    return any(events & _GONE for _, events in poller.poll(0))


def lanes_of(loop: asyncio.AbstractEventLoop) -> dict[Any, Lane] | None:
    """The lanes ``loop`` holds, by pool (read on that loop, or racily by the lender)."""
    lanes: dict[Any, Lane] | None = getattr(loop, _LANES, None)
    return lanes
