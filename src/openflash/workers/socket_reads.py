"""A worker's frames read from its blocking socket: as many frames as one ``recvmsg`` brings.

A warm call's CALL frame (a 17-byte header and a small payload) comes whole in one
``recvmsg_into`` into a buffer kept for the socket's life (not a ``recvmsg`` for its header and a
``recv`` for its payload); frames that arrived together are then taken from the buffer one after
the other, in order, without another system call. A payload from ``payloads.PREALLOCATE`` bytes
is read into a buffer of its own (anonymous memory, allocated once): what the buffer holds of it
first, then the rest straight from the socket, never past its end (the next frame stays in the
socket).

Descriptors (SCM_RIGHTS, shared_memory.py) arrive with the read that brought the first byte of
their frame, and the kernel ends a read with the message that carries them: they belong to the
last frame that starts within that read's bytes. A frame of ours (``shared_memory.MARK``) maps
them; any other closes them.

Used by the worker's reading threads (call_threads.py), one at a time. This module is part of
the worker runtime: it imports the standard library only (and protocol.py).
"""

from __future__ import annotations

import mmap
import os
import socket

from openflash.workers import payloads, protocol, shared_memory

__all__ = ["FrameReader"]

#: The most descriptors read with a frame (one is used: shared_memory.py).
_MAX_FDS = 4
_ANCILLARY = socket.CMSG_SPACE(4 * _MAX_FDS)
#: The buffer holds any frame whose payload is read through it (below PREALLOCATE), whole.
_BUFFER = 2 * payloads.PREALLOCATE


class FrameReader:
    """The frames of one blocking socket, in order (``next``); one thread reads at a time."""

    def __init__(self, sock: socket.socket, size: int = _BUFFER) -> None:
        self.sock = sock
        self.buffer = bytearray(max(size, protocol.HEADER.size + payloads.PREALLOCATE))
        self.view = memoryview(self.buffer)
        self.start = 0  # the first byte not taken yet
        self.end = 0  # the end of the bytes read
        self.base = 0  # the stream offset of buffer[0]
        #: Descriptors received, and the stream offsets [first, last) of the read that brought
        #: them: they are the last frame's that starts there.
        self.fds: list[int] = []
        self.fds_span = (0, 0)

    def ready(self) -> bool:
        """Whether the next frame (or a large one's header) is already read: ``next`` would
        not wait for the socket."""
        held = self.end - self.start
        if held < protocol.HEADER.size:
            return False
        size = int.from_bytes(self.view[self.start + 9 : self.start + 17], "big")
        return size >= payloads.PREALLOCATE or held >= protocol.HEADER.size + size

    def large_next(self) -> bool:
        """Whether the next frame's header, already read, announces a payload read into a
        buffer of its own (``next`` then blocks until it is all read)."""
        if self.end - self.start < protocol.HEADER.size:
            return False
        size = int.from_bytes(self.view[self.start + 9 : self.start + 17], "big")
        return size >= payloads.PREALLOCATE

    def fill_now(self) -> bool | None:
        """One read of what the socket holds now, without waiting (the event loop's): True
        when bytes came, None when there were none, False once the socket is closed."""
        wanted = protocol.HEADER.size
        if self.end - self.start >= wanted:  # room for the frame at the front, whole
            size = int.from_bytes(self.view[self.start + 9 : self.start + 17], "big")
            wanted += min(size, payloads.PREALLOCATE)
        try:
            return self._fill(wanted, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except (OSError, OverflowError, ValueError):
            return False

    def next(self) -> protocol.Frame | None:
        """The next frame, or None once the other side has closed the socket (or reset it). A
        frame whose payload is in shared memory (shared_memory.py) comes with it mapped."""
        try:
            return self._next()
        except (OSError, OverflowError, ValueError):  # reset, its socket gone, or a payload
            return None  # that cannot be allocated (a corrupt header): nothing more is read

    def close(self) -> None:
        """Close descriptors received and not taken by a frame."""
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)

    def _next(self) -> protocol.Frame | None:
        header = protocol.HEADER.size
        while self.end - self.start < header:
            if not self._fill(header):
                return None
        at = self.base + self.start
        kind, call_id, size = protocol.HEADER.unpack_from(self.buffer, self.start)
        fds = self._fds_of(at, header + size)
        try:
            if size >= payloads.PREALLOCATE:
                return self._large(kind, call_id, size)
            while self.end - self.start < header + size:
                if not self._fill(header + size):
                    return None
            first = self.start + header
            self.start = first + size
            payload = bytes(self.view[first : self.start]) if size else b""
            if fds:
                taken, fds = fds, []
                mapped = shared_memory.open_payload(payload, taken)  # closes them
                if mapped is not None:
                    return protocol.Frame(kind, call_id, mapped)  # type: ignore[arg-type]
            return protocol.Frame(kind, call_id, payload)
        finally:
            for fd in fds:  # descriptors that came with a frame that is not ours to map
                os.close(fd)

    def _fds_of(self, at: int, length: int) -> list[int]:
        """The descriptors of the frame at stream offset ``at`` (``length`` bytes), if any."""
        if not self.fds:
            return []
        first, last = self.fds_span
        if at < first:
            return []  # a frame before the read that brought them
        if at < last and at + length < last:
            return []  # a later frame starts within that read: theirs
        if at >= last:
            self.close()  # no frame of that read took them (cannot be): not kept
            return []
        fds, self.fds = self.fds, []
        return fds

    def _fill(self, wanted: int, flags: int = 0) -> bool:
        """Read more (one ``recvmsg_into``), with room for ``wanted`` bytes from ``start``;
        False once the socket is closed."""
        if self.start == self.end:
            self.base += self.start
            self.start = self.end = 0
        elif self.start + wanted > len(self.buffer):  # move what is held to the front
            held = self.end - self.start
            self.view[:held] = self.view[self.start : self.end]
            self.base += self.start
            self.start, self.end = 0, held
        got, ancillary, _, _ = self.sock.recvmsg_into([self.view[self.end :]], _ANCILLARY, flags)
        if ancillary:
            fds = shared_memory.attached(ancillary)
            if fds:
                self.close()  # the previous ones' frame never came (cannot be)
                self.fds = fds
                self.fds_span = (self.base + self.end, self.base + self.end + got)
        if not got:
            return False
        self.end += got
        return True

    def _large(self, kind: int, call_id: int, size: int) -> protocol.Frame | None:
        """A payload read into one buffer allocated once (anonymous memory: no zero-fill pass),
        what the buffer holds first, the rest straight from the socket."""
        first = self.start + protocol.HEADER.size
        payload = mmap.mmap(-1, size)
        view = memoryview(payload)
        held = min(size, self.end - first)
        view[:held] = self.view[first : first + held]
        self.start = first + held
        got = held
        while got < size:
            n = self.sock.recv_into(view[got:])
            if not n:
                return None
            got += n
        self.base += size - held  # read past the buffer: the stream moved on without it
        return protocol.Frame(kind, call_id, payload)  # type: ignore[arg-type]
