"""Very large frames between a pool and a worker on this machine through shared memory: a memfd
passed with a small frame (SCM_RIGHTS), not the payload's bytes through the socket.

Both ways, a frame whose payload is at least ``FLASH_SHARED_MEMORY_MIN`` bytes (64 MiB by
default) is written once into a new ``memfd_create`` file (``os.pwritev`` from the pickle's parts:
no page faults of a mapping, nothing copied in Python), sealed (it can no longer be written,
shrunk or grown: the reader's mapping can never lose its pages under it, which would be a
SIGBUS) and its descriptor sent with a small frame of the same kind and call id whose payload is
``MARK`` and the real payload's size. The reader maps the file (private, copy-on-write: its values
are its own to change) and reads the payload from the mapping as if it had come through the
socket; the loaded arrays share the mapping, which lives as long as they do. The writer closes
its descriptor as soon as the frame is sent.

- A CALL to a worker over a Unix socket (spawned, forked, or in its namespace): ``send``, from
  the pool; the worker's reading threads take the descriptor (call_threads.read_frame,
  ``open_payload``).
- A RESULT from such a worker (``send_result``, from its ``Wire``), when its pool reads its
  socket with ``Receiving`` (the local backend does, and tells the worker the size from which to
  use it in ``RESULTS_VARIABLE``): asyncio's transport reads with ``recv``, which drops what comes
  with the bytes, so ``Receiving.recv`` reads with ``recvmsg`` and keeps the descriptors, in the
  order they came, for ``received`` (the pool, as each reply arrives) to map.

Why a memfd rather than a named segment (``multiprocessing.shared_memory``, ``/dev/shm``): it
has no name, so nothing is left behind whoever dies when. The file lives while a descriptor or
a mapping of it does: the writer's descriptor is closed once the frame is sent; one in flight in
the socket is released by the kernel with the socket when the reader dies before reading it (or
by ``Receiving.close`` when a descriptor came that no frame took); the reader's mapping ends with
its values or its process.

Elsewhere (a worker over pipes or over Ray, a platform without ``memfd_create``, a socket that
cannot take the small frame now, a pool that does not read with ``Receiving``), frames go through
the socket as before.

This module is part of the worker runtime: it imports the standard library only (and
protocol.py).
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from openflash.workers import protocol

__all__ = [
    "MARK",
    "RESULTS_VARIABLE",
    "Receiving",
    "advance",
    "attached",
    "open_payload",
    "receivable",
    "received",
    "result_minimum",
    "send",
    "send_result",
]

#: The payload of a frame whose real payload is in the memfd attached to it; then its size.
MARK = b"\x00SHM"
_SIZE = struct.Struct("!Q")
_MARKED = len(MARK) + _SIZE.size
#: The names the files show in /proc (``memfd:NAME``): a call's arguments, a result.
NAME = "openflash-payload"
RESULT_NAME = "openflash-result"
#: A worker's variable: results of this many bytes or more go back through shared memory (its
#: pool reads them with ``Receiving``); unset: through the socket.
RESULTS_VARIABLE = "OPENFLASH_SHARED_RESULTS_MIN"
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
_NEEDED_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_WRITE
#: The most descriptors read with one ``recvmsg`` (one is used: a frame's file).
_MAX_FDS = 4
_ANCILLARY = socket.CMSG_SPACE(4 * _MAX_FDS)
#: The most parts one ``pwritev`` takes (Linux's IOV_MAX).
_IOV_MAX = 1024


def send(writer: asyncio.StreamWriter, parts: list[protocol.Buffer], minimum: int | None) -> bool:
    """Send the frame ``parts`` (a header, then its payload) through a memfd, if it is at least
    ``minimum`` bytes (None: never) and ``writer`` is a Unix socket with nothing queued before
    it. False when it was not sent (write it on the socket then)."""
    size = sum(memoryview(p).nbytes for p in parts) - protocol.HEADER.size
    if minimum is None or size < minimum or not hasattr(os, "memfd_create"):
        return False
    transport = getattr(writer, "transport", None)  # a Ray worker's writer has none
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX or transport.get_write_buffer_size():
        return False  # not a local socket, or frames queued ahead of this one
    fd, frame = _file(parts, NAME)
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as raw:
            try:
                sent = raw.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _fds(fd))])
            except (BlockingIOError, InterruptedError):
                return False  # the socket is full now: nothing was sent
        if sent < len(frame):
            writer.write(frame[sent:])  # the descriptor went with the first bytes
        return True
    finally:
        os.close(fd)  # the frame in flight holds the file now


def _file(parts: list[protocol.Buffer], name: str) -> tuple[int, bytes]:
    """A sealed memfd holding the payload of the frame ``parts``, and the small frame that
    stands for it (``MARK``, the size)."""
    kind, call_id, length = protocol.HEADER.unpack_from(parts[0])
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        views = [memoryview(p).cast("B") for p in parts]
        views[0] = views[0][protocol.HEADER.size :]
        _write(fd, [v for v in views if v.nbytes])
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd, protocol.encode(kind, call_id, MARK + _SIZE.pack(length))


def _write(fd: int, views: list[memoryview]) -> None:
    """``views`` written one after the other from the start of the file ``fd``."""
    offset = 0
    while views:
        written = os.pwritev(fd, views[:_IOV_MAX], offset)
        offset += written
        advance(views, written)


def advance(views: list[memoryview], count: int) -> None:
    """Drop the first ``count`` bytes of ``views`` (after a write that took that many)."""
    while count:
        size = views[0].nbytes
        if count >= size:
            count -= size
            views.pop(0)
        else:
            views[0] = views[0][count:]
            count = 0


def _fds(fd: int) -> bytes:
    return struct.pack("i", fd)


def attached(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors a ``recvmsg`` received."""
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(struct.unpack(f"{usable // 4}i", data[:usable]))
    return fds


def open_payload(payload: bytes, fds: list[int]) -> mmap.mmap | None:
    """The real payload of a frame read with the descriptors ``fds`` (closed here), mapped;
    None when the frame is not one of ours (its payload is then the frame's own)."""
    try:
        if len(fds) != 1 or len(payload) != _MARKED or payload[:4] != MARK:
            return None
        (size,) = _SIZE.unpack_from(payload, len(MARK))
        return mmap.mmap(fds[0], size, flags=mmap.MAP_PRIVATE)
    finally:
        for fd in fds:
            os.close(fd)


# A worker's results.


def result_minimum() -> int | None:
    """From a worker's environment (taken out of it): the size from which its results go
    through shared memory; None: never."""
    text = os.environ.pop(RESULTS_VARIABLE, "")
    try:
        minimum = int(text)
    except ValueError:
        return None
    return minimum if minimum > 0 and hasattr(os, "memfd_create") else None


def send_result(
    sock: socket.socket,
    parts: list[protocol.Buffer],
    minimum: int,
    send_all: Callable[[socket.socket, list[protocol.Buffer]], None],
) -> bool:
    """Write ``parts`` (whole frames, each starting a part) on the blocking ``sock``, a RESULT
    frame at their end of at least ``minimum`` bytes through a memfd (``send_all`` writes the
    frames before it); False when it is not sent so (write them all on the socket then)."""
    first_part = parts[0]
    if len(parts) == 1 and type(first_part) is bytes and len(first_part) < minimum:
        return False  # a small frame, as most replies are: no more to look at
    total = sum(memoryview(p).nbytes for p in parts)
    if total - protocol.HEADER.size < minimum:
        return False
    first, i = 0, 0
    while i < len(parts):  # the last frame's first part
        first = i
        size = protocol.HEADER.unpack_from(parts[i])[2] + protocol.HEADER.size
        while size > 0:
            size -= memoryview(parts[i]).nbytes
            i += 1
    kind, _, length = protocol.HEADER.unpack_from(parts[first])
    if kind != protocol.RESULT or length < minimum:
        return False
    try:
        fd, frame = _file(parts[first:], RESULT_NAME)
    except OSError:  # no memfd here now (out of memory, of descriptors): the socket takes it
        return False
    try:
        if first:
            send_all(sock, parts[:first])
        sent = sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _fds(fd))])
        if sent < len(frame):
            sock.sendall(frame[sent:])  # the descriptor went with the first bytes
    finally:
        os.close(fd)  # the frame in flight holds the file now
    return True


# A pool's side of results.


def receivable(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether a pool on ``loop`` receives the descriptors that come with its frames:
    asyncio's selector loop reads a transport with the socket's own ``recv`` (``Receiving``);
    another loop (uvloop: ``uvicorn --loop uvloop``) reads the descriptor itself and drops them."""
    return isinstance(loop, asyncio.SelectorEventLoop)


class Receiving(socket.socket):
    """A socket whose ``recv`` (what asyncio's transport reads with) keeps the descriptors that
    came with the bytes, in order, in ``descriptors``; closing it closes those no frame took."""

    def __init__(
        self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self.descriptors: deque[int] = deque()

    @classmethod
    def of(cls, sock: socket.socket) -> Receiving:
        """``sock`` itself (its descriptor), as a Receiving socket."""
        return cls(sock.family, sock.type, sock.proto, sock.detach())

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        data, ancillary, _, _ = self.recvmsg(bufsize, _ANCILLARY, flags)
        if ancillary:
            self.descriptors.extend(attached(ancillary))
        return data

    def close(self) -> None:
        while self.descriptors:
            os.close(self.descriptors.popleft())
        super().close()


def received(frame: protocol.Frame, handle: Any) -> protocol.Frame:
    """``frame`` as its reader should see it: a RESULT whose payload is in shared memory with
    that payload mapped (the descriptor ``handle.descriptors`` holds for it taken and closed);
    any other frame as it is. A file that is not sealed against writing and shrinking, or
    smaller than it says, is refused: the reply becomes an ERROR saying so."""
    payload = frame.payload
    if len(payload) != _MARKED or payload[:4] != MARK or frame.kind != protocol.RESULT:
        return frame
    descriptors: deque[int] | None = getattr(handle, "descriptors", None)
    if not descriptors:
        return _refused(frame, "no file came with it")
    fd = descriptors.popleft()
    try:
        (size,) = _SIZE.unpack_from(payload, len(MARK))
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        if seals & _NEEDED_SEALS != _NEEDED_SEALS:
            return _refused(frame, "its file can still be written or shrunk (not sealed)")
        if os.fstat(fd).st_size < size:
            return _refused(frame, f"its file holds fewer than the {size} bytes announced")
        mapped = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE)
    except (OSError, ValueError, OverflowError) as e:
        return _refused(frame, f"its file cannot be mapped here: {e}")
    finally:
        os.close(fd)
    return protocol.Frame(frame.kind, frame.call_id, mapped)  # type: ignore[arg-type]


def _refused(frame: protocol.Frame, why: str) -> protocol.Frame:
    info: protocol.ErrorInfo = {
        "type": "openflash.SharedMemoryError",
        "message": f"the worker's result came in shared memory that openflash refuses: {why}",
        "traceback": "",
        "exception": None,
        "missing_module": None,
    }
    return protocol.Frame(protocol.ERROR, frame.call_id, protocol.dumps(info))
