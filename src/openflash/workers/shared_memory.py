"""Very large frames to a worker on this machine through shared memory: a memfd passed with the
frame (SCM_RIGHTS), not its bytes through the socket.

A CALL whose frame is at least ``FLASH_SHARED_MEMORY_MIN`` bytes (64 MiB by default), sent to a
worker over a Unix socket (a local worker: spawned, forked or in its namespace), is written once
into a new ``memfd_create`` file; the socket carries a small frame of the same kind and call id
whose payload is ``MARK`` and the real payload's size, with the memfd's descriptor attached to its
first byte. The worker maps the file (private, copy-on-write: its values are its own to change)
and reads the payload from the mapping as if it had come through the socket; the loaded arrays
share the mapping. The caller closes its descriptor as soon as the frame is sent.

Why a memfd rather than a named segment (``multiprocessing.shared_memory``, ``/dev/shm``): it
has no name, so nothing is left behind whoever dies when. The file lives while a descriptor or
a mapping of it does: the caller's descriptor is closed at once; one in flight in the socket is
released by the kernel with the socket when the worker dies before reading it; the worker's
mapping ends with its values or its process. A named segment must be unlinked by someone, and a
process killed between creating and unlinking it leaks it until the machine restarts.

Elsewhere (a worker over pipes or over Ray, a platform without ``memfd_create``, a socket that
cannot take the small frame now), the frame goes through the socket as before. Results come back
through the socket (the pool's reader, an asyncio transport, cannot receive descriptors).

This module is part of the worker runtime: it imports the standard library only (and
protocol.py).
"""

from __future__ import annotations

import asyncio
import mmap
import os
import socket
import struct

from openflash.workers import protocol

__all__ = ["MARK", "attached", "open_payload", "send"]

#: The payload of a frame whose real payload is in the memfd attached to it; then its size.
MARK = b"\x00SHM"
_SIZE = struct.Struct("!Q")
_NAME = "openflash-payload"


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
    kind, call_id, length = protocol.HEADER.unpack(bytes(memoryview(parts[0])[:17]))
    fd = os.memfd_create(_NAME, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, length)
        with mmap.mmap(fd, length) as file:
            offset = 0
            for i, part in enumerate(parts):
                view = memoryview(part).cast("B")[protocol.HEADER.size if i == 0 else 0 :]
                file[offset : offset + view.nbytes] = view
                offset += view.nbytes
        frame = protocol.encode(kind, call_id, MARK + _SIZE.pack(length))
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
        if len(fds) != 1 or len(payload) != len(MARK) + _SIZE.size or payload[:4] != MARK:
            return None
        (size,) = _SIZE.unpack_from(payload, len(MARK))
        return mmap.mmap(fds[0], size, flags=mmap.MAP_PRIVATE)
    finally:
        for fd in fds:
            os.close(fd)
