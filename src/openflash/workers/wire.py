"""Frames out of a worker on its socket (``Wire``): whole frames, one at a time, from any thread.

Frames go out written with ``sendmsg`` from their parts (large buffers are never copied), a
large RESULT through a memfd (shared_memory.py); the event loop keeps its frames in an outbox
written together once its iteration ends, small ones at once, large ones (or frames that would
wait for another thread's) from a thread. Used by the reading threads (call_threads.py) and the
worker's connection (connection.py). This module is part of the worker runtime: it imports the
standard library only (and protocol.py, shared_memory.py).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import threading
import traceback
from collections.abc import Callable

from openflash.workers import protocol, shared_memory

__all__ = ["Wire", "report", "socket_gone"]

#: A write failed because the socket is gone (the worker is ending: its reader reads the end).
_GONE = {errno.EPIPE, errno.ECONNRESET, errno.EBADF, errno.ENOTCONN, errno.ESHUTDOWN}

#: Frames from this size are written from a thread, never from the event loop.
_LOOP_WRITES_BELOW = 1 << 16
#: The most parts one ``sendmsg`` takes (Linux's IOV_MAX).
_IOV_MAX = 1024


class Wire:
    """Frames out on a blocking socket, whole and one at a time, from any thread.

    From the event loop, frames are kept in an outbox and written together once the loop's
    iteration ends (every reply that iteration finished in one ``sendmsg``), in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        #: Results from this size go through shared memory (shared_memory.py; None: never).
        self.shared_min = shared_memory.result_minimum()
        self._outbox: list[protocol.Buffer] = []
        self._held = 0  # the outbox's bytes
        #: Done once the outbox's frames are written (None: nothing waits to be written).
        self._flushed: asyncio.Future[None] | None = None
        self._writing = False  # a thread writes frames the outbox held
        #: Told of a frame from the loop that a thread failed to write (not the socket gone:
        #: its reply is lost); the worker's reader ends the worker (call_threads.Reader.fail).
        self.failed: Callable[[BaseException], None] = report

    def write(self, parts: list[protocol.Buffer]) -> None:
        """Write whole frames' parts, in order (blocking until the socket took them all); each
        RESULT of at least ``shared_min`` bytes through a memfd (shared_memory.send_result),
        wherever it stands among them (the loop's outbox holds frames together)."""
        with self.lock:
            large = self.shared_min
            if large is None or not shared_memory.send_result(self.sock, parts, large, _send_all):
                _send_frames(self.sock, parts, large)

    async def send_parts(self, parts: list[protocol.Buffer]) -> None:
        """From the event loop: the frame joins the outbox, written at the end of this loop
        iteration, at once when small and no thread is writing, else from a thread (the loop
        never waits on a large frame, nor on another thread's); a large frame's sender waits
        until it is written."""
        size = sum(memoryview(p).nbytes for p in parts)
        self._outbox.extend(parts)
        self._held += size
        flushed = self._flushed
        if flushed is None:
            loop = asyncio.get_running_loop()
            flushed = self._flushed = loop.create_future()
            if not self._writing:
                if getattr(loop, "_ready", True):
                    loop.call_soon(self._write_out, loop)
                else:  # nothing else runs in this iteration (asyncio's queue): no frame to wait for
                    self._write_out(loop)
        if size >= _LOOP_WRITES_BELOW:
            await asyncio.shield(flushed)

    async def send(self, frame: bytes) -> None:
        await self.send_parts([frame])

    async def drain(self) -> None:
        """Wait until every frame the loop sent is written."""
        while self._flushed is not None:
            await asyncio.shield(self._flushed)

    def _write_out(self, loop: asyncio.AbstractEventLoop) -> None:
        parts, size, flushed = self._outbox, self._held, self._flushed
        self._outbox, self._held, self._flushed = [], 0, None
        if flushed is None:
            return
        if size < _LOOP_WRITES_BELOW and self.lock.acquire(blocking=False):
            try:
                _send_all(self.sock, parts)
            except OSError:
                pass  # the socket is gone: the worker is ending (its reader reads the end)
            finally:
                self.lock.release()
            flushed.set_result(None)
            return
        self._writing = True  # frames sent meanwhile wait in the outbox, after these
        written = loop.run_in_executor(None, self.write, parts)
        written.add_done_callback(lambda done: self._written(loop, flushed, done))

    def _written(
        self,
        loop: asyncio.AbstractEventLoop,
        flushed: asyncio.Future[None],
        done: asyncio.Future[None],
    ) -> None:
        self._writing = False
        flushed.set_result(None)
        error = None if done.cancelled() else done.exception()
        if error is not None and not socket_gone(error):
            self.failed(error)  # the frames are lost: not quietly (their callers would wait)
        if self._flushed is not None:
            self._write_out(loop)


def _send_frames(sock: socket.socket, parts: list[protocol.Buffer], large: int | None) -> None:
    """Frames one at a time: each large RESULT but the last (send_result looked at that one)
    through a memfd, with the frames before it; the rest on the socket, in order."""
    start = i = 0
    if large is not None and len(parts) > 1:
        while i < len(parts):
            kind, _, length = protocol.HEADER.unpack_from(parts[i])
            size = length + protocol.HEADER.size
            while size > 0:
                size -= memoryview(parts[i]).nbytes
                i += 1
            if kind != protocol.RESULT or length < large or i == len(parts):
                continue
            if shared_memory.send_result(sock, parts[start:i], large, _send_all):
                start = i
    _send_all(sock, parts[start:] if start else parts)


def _send_all(sock: socket.socket, parts: list[protocol.Buffer]) -> None:
    if len(parts) == 1 and type(parts[0]) is bytes:  # one small frame (most replies)
        sock.sendall(parts[0])
        return
    views = [memoryview(p).cast("B") for p in parts if memoryview(p).nbytes]
    while views:
        shared_memory.advance(views, sock.sendmsg(views[:_IOV_MAX]))


def socket_gone(error: BaseException) -> bool:
    """Whether ``error`` (from a write) says the socket is gone: the worker is ending then."""
    return isinstance(error, OSError) and error.errno in _GONE


def report(error: BaseException) -> None:
    """An error no call's reply carries, on the worker's stderr (the pool's log)."""
    text = "".join(traceback.format_exception(error))
    sys.stderr.write(f"openflash: the worker failed outside a call; ending\n{text}")
    sys.stderr.flush()
