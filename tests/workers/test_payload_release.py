"""A large result's frame, read into a buffer of its own, is unmapped once loaded unless what
was loaded shares it (workers/payloads.py's ``release``)."""

from __future__ import annotations

import mmap
import pickle

from openflash.workers import payloads, protocol


def _frame(value: object) -> mmap.mmap:
    """``value``'s payload in an mmap, as ``payloads.read_into`` leaves a large frame."""
    parts = payloads.envelope(payloads.pack(value), lambda size: b"")
    data = b"".join(bytes(p) for p in parts)
    buffer = mmap.mmap(-1, len(data))
    buffer[:] = data
    return buffer


def test_a_result_that_copied_what_it_needed_lets_its_buffer_go() -> None:
    buffer = _frame("x" * (1 << 20))
    result = protocol.loads(buffer)
    payloads.release(buffer)
    assert buffer.closed
    assert result == "x" * (1 << 20)


def test_a_result_sharing_its_buffer_keeps_it() -> None:
    data = bytearray(b"y" * (1 << 20))
    buffer = _frame(pickle.PickleBuffer(data))  # out of band: loaded as a view of the frame
    result = protocol.loads(buffer)
    payloads.release(buffer)
    assert not buffer.closed
    assert bytes(result) == bytes(data)
    payloads.release(b"plain bytes")  # nothing to unmap: no error
