"""Out-of-band payloads: a call's arguments and its result as pickle protocol 5 with their
large buffers (numpy arrays, memoryviews, objects exporting a PickleBuffer) apart, and the I/O
that moves them without copies: written a part at a time, read into one buffer allocated once.

An envelope is ``MAGIC``, the number of parts (u32), each part's length (u64), then the parts: the
pickle first, then its buffers; a plain pickle starts with PROTO (0x80), never with ``MAGIC``.
protocol.py frames it. Part of the worker runtime: it imports the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import mmap
import pickle
import struct
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAGIC",
    "PREALLOCATE",
    "SEPARATE",
    "Buffer",
    "FrameError",
    "Packed",
    "collector",
    "envelope",
    "pack",
    "packed",
    "read_into",
    "reduce_buffer",
    "release",
    "unpack",
    "write_chunked",
    "write_parts",
]

#: The start of an envelope (a plain pickle starts with PROTO, 0x80), then the number of parts.
MAGIC = b"\x00OB5"
_COUNT = struct.Struct("!I")
#: Buffers from this size travel out of band, each written on its own; smaller ones are joined.
SEPARATE = 1 << 14
#: Payloads from this size are read into one preallocated buffer, chunk by chunk.
PREALLOCATE = 1 << 16
_CHUNK = 1 << 20

Buffer = bytes | bytearray | memoryview


class Packed:
    """A pickle (``data``) and its out-of-band buffers: a call's arguments or a result, pickled
    once. Pickled again (inside a CALL frame's payload), both go out of band, not copied."""

    __slots__ = ("buffers", "data")

    def __init__(self, data: Buffer, buffers: tuple[Buffer, ...] = ()) -> None:
        self.data = data
        self.buffers = buffers

    def __reduce_ex__(self, protocol: Any) -> Any:
        if protocol < 5:  # in band, copied
            return Packed, (bytes(self.data), tuple(bytes(b) for b in self.buffers))
        parts = tuple(pickle.PickleBuffer(b) for b in self.buffers)
        return Packed, (pickle.PickleBuffer(self.data), parts)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Packed)
            and bytes(self.data) == bytes(other.data)
            and [bytes(b) for b in self.buffers] == [bytes(b) for b in other.buffers]
        )

    __hash__ = None  # type: ignore[assignment]

    def load(self) -> Any:
        return pickle.loads(self.data, buffers=self.buffers)


def packed(value: bytes | Packed) -> Packed:
    """``value`` as a Packed (a plain pickle has no buffers)."""
    return value if isinstance(value, Packed) else Packed(value)


def collector(buffers: list[Buffer]) -> Callable[[pickle.PickleBuffer], bool]:
    """A ``buffer_callback`` that keeps large contiguous buffers out of band in ``buffers``."""

    def keep(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: in band
            return True
        if raw.nbytes < SEPARATE:
            return True
        buffers.append(raw)
        return False

    return keep


def _memoryview(data: Any, fmt: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    raw: Any = memoryview(data).cast("B")
    view: memoryview = raw.cast(fmt, shape)
    return view.toreadonly() if readonly else view


def reduce_buffer(obj: Any) -> Any:
    """How a pickler's ``reducer_override`` sends a memoryview (not picklable otherwise): its
    memory out of band. NotImplemented for anything else. (Picklers never ask about bytes and
    bytearrays: those are copied into the pickle, which itself travels out of band.)"""
    if type(obj) is memoryview:
        data = obj if obj.c_contiguous else obj.tobytes()
        return _memoryview, (pickle.PickleBuffer(data), obj.format, obj.shape, obj.readonly)
    return NotImplemented


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        return reduce_buffer(obj)


def pack(value: Any) -> Packed:
    """``value`` pickled (protocol 5), its large buffers out of band."""
    buffers: list[Buffer] = []
    file = io.BytesIO()
    _Pickler(file, protocol=5, buffer_callback=collector(buffers)).dump(value)
    return Packed(file.getbuffer(), tuple(buffers))


def envelope(value: Packed, header: Callable[[int], bytes]) -> list[Buffer]:
    """A frame of ``value`` (``header`` of the payload's size first): a plain pickle without
    buffers, else an envelope; the parts to write one after the other (large buffers on their
    own, never copied)."""
    if not value.buffers:
        size = memoryview(value.data).nbytes
        return [header(size) + value.data] if size < SEPARATE else [header(size), value.data]
    parts = [memoryview(value.data), *(memoryview(b) for b in value.buffers)]
    sizes = [p.nbytes for p in parts]
    prefix = MAGIC + _COUNT.pack(len(parts)) + struct.pack(f"!{len(parts)}Q", *sizes)
    out: list[Buffer] = []
    small: list[Buffer] = [header(len(prefix) + sum(sizes)), prefix]
    for part, size in zip(parts, sizes, strict=True):
        if size < SEPARATE:
            small.append(part)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(part)
    if small:
        out.append(b"".join(small))
    return out


def unpack(payload: Buffer) -> Packed:
    """A payload as its pickle and buffers (views of ``payload``: nothing copied)."""
    if payload[:4] != MAGIC:  # a plain pickle (bytes slicing: cheaper than a view's compare)
        return Packed(payload)
    view = memoryview(payload)
    (count,) = _COUNT.unpack_from(view, len(MAGIC))
    start = len(MAGIC) + _COUNT.size
    sizes = struct.unpack_from(f"!{count}Q", view, start)
    offset = start + 8 * count
    parts = []
    for size in sizes:
        parts.append(view[offset : offset + size])
        offset += size
    return Packed(parts[0], tuple(parts[1:]))


def release(payload: Any) -> None:
    """Unmap a payload read into a buffer of its own (``read_into``) once what was loaded from it
    does not share it: a str or bytes result copied its part, so the buffer (as large as the
    result) goes now rather than when the last reference to the frame goes (asyncio keeps the
    future it came in while the caller's task runs on). A loaded array that shares it keeps it:
    closing then raises BufferError, and the buffer lives as long as the array."""
    if isinstance(payload, mmap.mmap):
        with contextlib.suppress(BufferError):
            payload.close()


class FrameError(Exception):
    """What arrived cannot be a frame (its header announces more bytes than this machine has
    memory, or than can be allocated): the stream is corrupt, nothing more on it is trusted."""


async def read_into(reader: asyncio.StreamReader, size: int) -> mmap.mmap:
    """``size`` bytes read into one buffer allocated once (not grown, nor copied at the end):
    from a socket, straight into it with ``recv_into``; from anything else, chunk by chunk."""
    # Anonymous memory comes zeroed from the kernel page by page as it is written: no pass of
    # its own to clear it (a bytearray's), which on a large payload costs as much as the copy.
    try:
        payload = mmap.mmap(-1, size)
    except (OSError, OverflowError, ValueError) as e:  # ENOMEM: not this much memory free
        raise FrameError(f"a frame of {size} bytes cannot be allocated here: {e}") from None
    view = memoryview(payload)
    got = _take_buffered(reader, view)
    transport = getattr(reader, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if got < size and transport is not None and sock is not None and hasattr(reader, "_paused"):
        if transport.is_closing():  # its socket may be gone: what the reader holds is all
            raise asyncio.IncompleteReadError(bytes(view[:got]), size)
        transport.pause_reading()  # the socket's bytes are ours until the payload is in
        try:
            with sock.dup() as raw:
                raw.setblocking(False)
                loop = asyncio.get_running_loop()
                while got < size:
                    n = await loop.sock_recv_into(raw, view[got:])
                    if not n:
                        raise asyncio.IncompleteReadError(bytes(view[:got]), size)
                    got += n
        finally:
            reader._paused = False
            if not transport.is_closing():
                transport.resume_reading()
    while got < size:
        chunk = await reader.read(min(size - got, _CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(view[:got]), size)
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    return payload


def _take_buffered(reader: asyncio.StreamReader, view: memoryview) -> int:
    """What the reader holds already of the payload, moved into ``view``."""
    buffered = getattr(reader, "_buffer", None)
    if not isinstance(buffered, bytearray) or not buffered:
        return 0
    take = min(len(buffered), len(view))
    view[:take] = memoryview(buffered)[:take]
    del buffered[:take]
    return take


def write_parts(writer: asyncio.StreamWriter, parts: list[Buffer]) -> None:
    for part in parts:
        writer.write(part)


async def write_chunked(writer: asyncio.StreamWriter, parts: list[Buffer], flush_at: int) -> None:
    """``parts`` written a chunk at a time, drained past ``flush_at`` bytes: the transport never
    holds a copy of a large buffer (the caller keeps other frames out meanwhile)."""
    for part in parts:
        view = memoryview(part).cast("B")
        for start in range(0, view.nbytes, _CHUNK):
            writer.write(view[start : start + _CHUNK])
            if writer.transport.get_write_buffer_size() > flush_at:
                await writer.drain()
