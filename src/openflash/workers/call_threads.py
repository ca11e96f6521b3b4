"""A worker's socket read by threads that run plain functions' calls themselves: no thread hop.

A warm call of a plain (sync) function used to cross three hands in its worker: the event loop
read the CALL frame, handed the function to a thread pool, and took its result back to write the
reply (a queue, the loop's self-pipe, three loop iterations: most of a warm call's cost there).
Here the socket is read by a small group of threads taking turns (leader/follower): one thread
at a time holds ``read_lock`` and blocks in ``recv`` (socket_reads.py: every frame that arrived
together, from one system call); when it reads a CALL of a plain function the worker already
holds, it lets go of the lock (another thread takes over the reading), runs the call itself and
writes the reply itself, then queues for the lock again. Every other frame (calls of async
functions, of methods, of a function not loaded yet, streams; nested calls' replies, CANCEL,
CREDIT, RELEASE, CALLER) goes to the event loop, in the order read, as before (the frames read
together in one hand-over: one wake-up of the loop); async functions and nested calls keep the
loop. The pool never sends a worker more than MAX_CONCURRENCY calls, and there is always one
thread more than the calls running.

With MAX_CONCURRENCY 1 (the default: no second CALL comes while one runs), the thread keeps the
reading while it runs the call: no other thread is woken, nothing changes hands, per call. What
must still be read during a call is read by another thread once the reading is handed off
(``Reader.hand_off``): at once when the call makes a nested call (its reply comes on the socket,
channel.py asks before waiting), else once the call has run for ``STANDBY_S`` (a standby thread,
which sleeps while no call runs and wakes once per period while calls do: nothing per call), so
that SHUTDOWN or the socket closed still end the worker during a long call, and CANCEL is read.

While the loop runs the calls (async functions, methods), the loop reads: a thread that read such
a call gives the loop the reading (``read_lock`` stays taken), and the loop reads the socket when
it is readable, without waiting, and handles each whole frame where it stands (no thread woken,
no hand-over to the loop per frame). The next plain function's call, or a large payload (read
blocking into its own buffer), gives the reading back to the threads; the thread that takes it
runs that call.

Frames go out through ``Wire`` (wire.py): whole frames, one at a time, from any thread.

A call whose thread fails past the call's own error handling (its reply could not be written: it
is lost) is reported on stderr and the worker ends (``fail``): the pool fails its calls with the
crash error, nothing waits for a reply that will not come.

Used for a worker on a socket (child.serve); a worker on stdin and stdout (in a container) keeps
the loop's streams. This module is part of the worker runtime: it imports the standard library
only (and protocol.py).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

from openflash.workers import protocol, socket_reads
from openflash.workers.wire import Wire, report, socket_gone

__all__ = ["STANDBY_S", "Reader", "Wire", "socket_gone"]

#: How long a call keeps the reading before another thread takes it over (Reader._watch).
STANDBY_S = 0.02

#: Given a CALL frame read by a reading thread: a function that runs it there and writes its
#: reply (the thread runs it once it has let go of the reading), or None to send the frame to
#: the loop.
Claim = Callable[[protocol.Frame], Callable[[], None] | None]


class Reader:
    """Threads taking turns at reading the socket (one at a time), each running the plain calls
    it reads (``claim``) and sending every other frame to ``to_loop`` on ``loop``, in order.

    ``read_lock`` is held by the thread that has the reading, which may be running a call it
    kept the reading through (one call at a time); ``hand_off`` gives it to another thread."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        to_loop: Callable[[protocol.Frame], None],
        claim: Claim,
        max_calls: int,
    ) -> None:
        self.frames = socket_reads.FrameReader(sock)
        self.loop = loop
        self.to_loop = to_loop
        self.claim = claim
        #: Set (on the loop) when the parent closed the socket: the worker ends.
        self.closed: asyncio.Future[None] = loop.create_future()
        #: What ended the worker, when not the parent (``fail``): the worker then exits 1.
        self.failure: BaseException | None = None
        self.read_lock = threading.Lock()
        self._state = threading.Lock()  # the counts and the kept call's state below
        self._limit = max_calls + 1  # every call running in a thread, and one reading
        self._threads = 0
        self._free = 0  # threads reading or waiting to read
        self._ended = False
        #: One call at a time (the pool sends no second CALL while one runs): the thread that
        #: read it runs it keeping the reading.
        self._keeps = max_calls == 1
        self._running = 0  # the number of the call running with the reading kept (0: none)
        self._calls = 0  # such calls started so far
        self._handed = False  # the reading was handed off while it runs
        self._standby: threading.Thread | None = None
        self._parked = False  # the standby waits for a call to start (``_wake``)
        self._wake = threading.Event()
        #: A plain call the loop read, run by the thread that takes the reading from it.
        self._given: Callable[[], None] | None = None

    def start(self) -> None:
        self._add_thread()

    def hand_off(self, number: int = 0) -> None:
        """Let another thread read while the call that kept the reading runs (``number``: only
        if it is still that call); nothing when no call keeps it. From any thread: a nested
        call made by the running call (its reply must be read, channel.py), the standby."""
        with self._state:
            if not self._running or self._handed or number not in (0, self._running):
                return
            self._handed = True
            grow = self._free == 0
        self.read_lock.release()  # the running call's thread queues for it again once done
        if grow:
            self._add_thread()

    def _add_thread(self) -> None:
        with self._state:
            if self._threads >= self._limit:
                return
            self._threads += 1
            self._free += 1
        thread = threading.Thread(target=self._serve, name="openflash-reader", daemon=True)
        thread.start()

    def _serve(self) -> None:
        while True:
            self.read_lock.acquire()
            if not self._read():
                return

    def _read(self) -> bool:
        """Read while this thread has the reading: True once it has let go of it (it then ran
        a call, or gave the reading to the loop), False when the worker ends."""
        batch: list[protocol.Frame] = []
        run, self._given = self._given, None  # a call the loop read, and the reading with it
        while True:
            if run is None:
                if self._ended:
                    self.read_lock.release()
                    return False
                frame = self.frames.next()
                if frame is None or frame.kind == protocol.SHUTDOWN:
                    self._send(batch)
                    self._end()
                    self.read_lock.release()
                    return False
                run = self.claim(frame) if frame.kind == protocol.CALL else None
                if run is None:  # in order with the frames read before and after it
                    batch.append(frame)
                    to_loop_call = frame.kind == protocol.CALL
                    del frame  # a large payload is not kept while this thread waits
                    if not self.frames.ready():  # all that arrived together, in one hand-over
                        if to_loop_call:  # the loop runs the calls: it reads (read_lock kept)
                            self.loop.call_soon_threadsafe(self._receive_and_read, batch)
                            return True
                        self._send(batch)
                        batch = []
                    continue
                del frame
                self._send(batch)
                batch = []
            if self._keeps:
                if self._run_keeping(run):
                    run = None
                    continue
                return True
            with self._state:
                self._free -= 1
                grow = self._free == 0
            self.read_lock.release()
            if grow:  # someone must read while this thread runs the call
                self._add_thread()
            try:
                run()
            except BaseException as e:  # its reply is lost: the worker ends
                self.fail(e)
            finally:
                del run  # nor its arguments (a mapping of shared memory, shared_memory.py)
                with self._state:
                    self._free += 1
            return True

    def _receive_and_read(self, batch: list[protocol.Frame]) -> None:
        """On the loop: the frames a thread read (the last a call the loop runs), then the
        reading, before the calls' tasks first run."""
        self._receive_all(batch)
        self._loop_takes()

    def _loop_takes(self) -> None:
        """On the loop: it has the reading (a thread read a call the loop runs)."""
        if self._ended:
            self.read_lock.release()
            return
        self.loop.add_reader(self.frames.sock.fileno(), self._loop_read)

    def _loop_read(self) -> None:
        """On the loop, the socket readable: what it holds, read without waiting; its frames
        handled here, in order. A plain function's call, or a large payload (read into its
        own buffer, blocking), gives the reading back to the threads."""
        got = self.frames.fill_now()
        if got is None:
            return
        if got is False:
            self._loop_gives(None, end=True)
            return
        while self.frames.ready():
            if self.frames.large_next():
                self._loop_gives(None)
                return
            frame = self.frames.next()  # whole in the buffer: no system call
            if frame is None or frame.kind == protocol.SHUTDOWN:
                self._loop_gives(None, end=True)
                return
            run = self.claim(frame) if frame.kind == protocol.CALL else None
            if run is not None:
                self._loop_gives(run)
                return
            self.to_loop(frame)

    def _loop_gives(self, run: Callable[[], None] | None, *, end: bool = False) -> None:
        """On the loop: the reading back to the threads (with the plain call ``run`` the loop
        read, which the thread that takes the reading runs), or the worker ends."""
        self.loop.remove_reader(self.frames.sock.fileno())
        if end:
            self._ended = True
            _end(self.closed)
        self._given = run
        self.read_lock.release()

    def _send(self, batch: list[protocol.Frame]) -> None:
        """Frames to the loop: one wake-up of the loop for all of them."""
        if len(batch) == 1:
            self.loop.call_soon_threadsafe(self.to_loop, batch[0])
        elif batch:
            self.loop.call_soon_threadsafe(self._receive_all, batch)

    def _receive_all(self, batch: list[protocol.Frame]) -> None:
        for frame in batch:
            self.to_loop(frame)

    def _run_keeping(self, run: Callable[[], None]) -> bool:
        """Run a call keeping the reading (no other thread woken for it); True when this
        thread still has the reading after it (nothing handed it off meanwhile)."""
        with self._state:
            self._calls += 1
            number = self._running = self._calls
            self._handed = False
            self._free -= 1
        if self._standby is None:
            self._standby = threading.Thread(
                target=self._watch, name="openflash-standby", daemon=True
            )
            self._standby.start()
        elif self._parked:
            self._wake.set()
        try:
            run()
        except BaseException as e:  # its reply is lost: the worker ends
            self.fail(e)
        finally:
            del run
            with self._state:
                # Handed off, another thread may have read the next call (running now, its
                # own state): this thread no longer has the reading then.
                handed = self._handed or self._running != number
                if self._running == number:
                    self._running = 0
                self._free += 1
        return not handed

    def _watch(self) -> None:
        """The standby: a call that has kept the reading for ``STANDBY_S`` hands it off, so
        that what comes meanwhile is read (SHUTDOWN, the socket closed: the worker ends at
        once; CANCEL; a nested call's reply). It sleeps while no call runs (``_wake``), and
        wakes once per ``STANDBY_S`` while calls run: nothing per call."""
        seen_call, seen_count = 0, -1
        while not self._ended:
            time.sleep(STANDBY_S)
            running, count = self._running, self._calls
            if running and running == seen_call:
                self.hand_off(running)  # it ran for STANDBY_S at least
            elif not running and count == seen_count:  # no call for STANDBY_S
                self._parked = True
                if not self._running and self._calls == count:
                    self._wake.wait()
                self._wake.clear()
                self._parked = False
                running, count = self._running, self._calls
            seen_call, seen_count = running, count

    def fail(self, error: BaseException) -> None:
        """A call's thread, or a write (``Wire.failed``), failed past the call's own error
        handling: reported on stderr, and the worker ends (its pool fails its calls)."""
        report(error)
        if self.failure is None:
            self.failure = error
        self._end()

    def _end(self) -> None:
        if self._ended:  # already ending: another thread read the end, or a call failed
            return
        self._ended = True
        self.loop.call_soon_threadsafe(_end, self.closed)


def _end(closed: asyncio.Future[None]) -> None:
    if not closed.done():
        closed.set_result(None)
