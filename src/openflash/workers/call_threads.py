"""A worker's socket read by threads that run plain functions' calls themselves: no thread hop.

A warm call of a plain (sync) function used to cross three hands in its worker: the event loop
read the CALL frame, handed the function to a thread pool, and took its result back to write the
reply (a queue, the loop's self-pipe, three loop iterations: most of a warm call's cost there).
Here the socket is read by a small group of threads taking turns (leader/follower): one thread
at a time holds ``read_lock`` and blocks in ``recv``; when it reads a CALL of a plain function
the worker already holds, it lets go of the lock (another thread takes over the reading), runs
the call itself and writes the reply itself, then queues for the lock again. Every other frame
(calls of async functions, of methods, of a function not loaded yet, streams; nested calls'
replies, CANCEL, CREDIT, RELEASE, CALLER) goes to the event loop, in the order read, as before:
async functions and nested calls keep the loop. A nested call from a plain function still works,
since another thread reads its reply while the function waits; the pool never sends a worker
more than MAX_CONCURRENCY calls, and there is always one thread more than the calls running.

Frames go out through ``Wire``: whole frames, one at a time (a lock), written with ``sendmsg``
from the parts (large buffers are never copied), from any thread; the loop writes small frames at
once and hands large ones, or frames that would wait for another thread's, to a thread.

Used for a worker on a socket (child.serve); a worker on stdin and stdout (in a container) keeps
the loop's streams. This module is part of the worker runtime: it imports the standard library
only (and protocol.py).
"""

from __future__ import annotations

import asyncio
import mmap
import os
import socket
import threading
from collections.abc import Callable

from openflash.workers import payloads, protocol, shared_memory

__all__ = ["Reader", "Wire"]

#: Frames from this size are written from a thread, never from the event loop.
_LOOP_WRITES_BELOW = 1 << 16
#: The most parts one ``sendmsg`` takes (Linux's IOV_MAX).
_IOV_MAX = 1024
#: The most descriptors read with a frame (one is used: shared_memory.py).
_MAX_FDS = 4

#: Given a CALL frame read by a reading thread: a function that runs it there and writes its
#: reply (the thread runs it once it has let go of the reading), or None to send the frame to
#: the loop.
Claim = Callable[[protocol.Frame], Callable[[], None] | None]


class Wire:
    """Frames out on a blocking socket, whole and one at a time, from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        #: Results from this size go through shared memory (shared_memory.py; None: never).
        self.shared_min = shared_memory.result_minimum()

    def write(self, parts: list[protocol.Buffer]) -> None:
        """Write one frame's parts (blocking until the socket took them all)."""
        with self.lock:
            large = self.shared_min
            if large is None or not shared_memory.send_result(self.sock, parts, large, _send_all):
                _send_all(self.sock, parts)

    async def send_parts(self, parts: list[protocol.Buffer]) -> None:
        """From the event loop: a small frame at once when no thread is writing, else from a
        thread (the loop never waits on a large frame, nor on another thread's)."""
        size = sum(memoryview(p).nbytes for p in parts)
        if size < _LOOP_WRITES_BELOW and self.lock.acquire(blocking=False):
            try:
                _send_all(self.sock, parts)
            finally:
                self.lock.release()
            return
        await asyncio.to_thread(self.write, parts)

    async def send(self, frame: bytes) -> None:
        await self.send_parts([frame])


def _send_all(sock: socket.socket, parts: list[protocol.Buffer]) -> None:
    views = [memoryview(p).cast("B") for p in parts if memoryview(p).nbytes]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while sent:
            size = views[0].nbytes
            if sent >= size:
                sent -= size
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0


class Reader:
    """Threads taking turns at reading the socket (one at a time), each running the plain calls
    it reads (``claim``) and sending every other frame to ``to_loop`` on ``loop``, in order."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        to_loop: Callable[[protocol.Frame], None],
        claim: Claim,
        max_calls: int,
    ) -> None:
        self.sock = sock
        self.loop = loop
        self.to_loop = to_loop
        self.claim = claim
        #: Set (on the loop) when the parent closed the socket: the worker ends.
        self.closed: asyncio.Future[None] = loop.create_future()
        self.read_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._limit = max_calls + 1  # every call running in a thread, and one reading
        self._threads = 0
        self._free = 0  # threads reading or waiting to read
        self._ended = False

    def start(self) -> None:
        self._add_thread()

    def _add_thread(self) -> None:
        with self._count_lock:
            if self._threads >= self._limit:
                return
            self._threads += 1
            self._free += 1
        thread = threading.Thread(target=self._serve, name="openflash-reader", daemon=True)
        thread.start()

    def _serve(self) -> None:
        while True:
            with self.read_lock:
                if self._ended:
                    return
                frame = read_frame(self.sock)
                if frame is None or frame.kind == protocol.SHUTDOWN:
                    self._ended = True
                    self.loop.call_soon_threadsafe(_end, self.closed)
                    return
                run = self.claim(frame) if frame.kind == protocol.CALL else None
                if run is None:  # in order with the frames read before and after it
                    self.loop.call_soon_threadsafe(self.to_loop, frame)
                    del frame  # a large payload is not kept while this thread waits
                    continue
                del frame
                with self._count_lock:
                    self._free -= 1
                    grow = self._free == 0
            if grow:  # someone must read while this thread runs the call
                self._add_thread()
            try:
                run()
            finally:
                del run  # nor its arguments (a mapping of shared memory, shared_memory.py)
                with self._count_lock:
                    self._free += 1


def _end(closed: asyncio.Future[None]) -> None:
    if not closed.done():
        closed.set_result(None)


def read_frame(sock: socket.socket) -> protocol.Frame | None:
    """The next frame from a blocking socket, or None once the other side has closed it. A frame
    whose payload is in shared memory (shared_memory.py) comes with its payload mapped."""
    fds: list[int] = []
    try:
        header, fds = _read_header(sock)
        if header is None:
            return None
        kind, call_id, size = protocol.HEADER.unpack(header)
        if not size:
            return protocol.Frame(kind, call_id, b"")
        if size >= payloads.PREALLOCATE:
            # One buffer allocated once (anonymous memory: no zero-fill pass), read straight into.
            buffer = mmap.mmap(-1, size)
            if not _read_into(sock, memoryview(buffer)):
                return None
            return protocol.Frame(kind, call_id, buffer)  # type: ignore[arg-type]
        payload = _read_exactly(sock, size)
        if payload is not None and fds:
            taken, fds = fds, []
            mapped = shared_memory.open_payload(payload, taken)
            if mapped is not None:
                return protocol.Frame(kind, call_id, mapped)  # type: ignore[arg-type]
    except OSError:  # reset, or its socket gone
        return None
    finally:
        for fd in fds:  # descriptors that came with a frame that is not ours to map
            os.close(fd)
    return None if payload is None else protocol.Frame(kind, call_id, payload)


def _read_header(sock: socket.socket) -> tuple[bytes | None, list[int]]:
    """A frame's header, and the descriptors that came with its first byte."""
    size = protocol.HEADER.size
    data, ancillary, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(4 * _MAX_FDS))
    fds = shared_memory.attached(ancillary)
    if len(data) == size or not data:
        return (data or None), fds
    rest = _read_exactly(sock, size - len(data))
    return (None if rest is None else data + rest), fds


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = sock.recv(size)
    if len(data) == size:
        return data
    if not data:
        return None
    buffer = bytearray(size)
    buffer[: len(data)] = data
    return bytes(buffer) if _read_into(sock, memoryview(buffer)[len(data) :]) else None


def _read_into(sock: socket.socket, view: memoryview) -> bool:
    got, size = 0, view.nbytes
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            return False
        got += n
    return True
