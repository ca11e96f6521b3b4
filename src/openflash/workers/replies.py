"""A worker's RESULT and ERROR frames handled as the socket delivers them, not a loop iteration
later by the task that reads the worker (issue 25, item 2).

The pool's reader task (workers/pool.py ``_read``) reads every frame through
:meth:`ReplyTap.read`. While that task waits for the next frame's header and its reader holds
nothing, the bytes the transport delivers (``StreamReader.feed_data``, from the protocol's
``data_received``) are looked at here first: each whole RESULT or ERROR frame at their front
(payload under ``payloads.PREALLOCATE``) goes straight to ``on_reply``, which resolves the
caller's future in the same loop iteration. The first other frame (NESTED, ITEM, PROGRESS, ...),
an incomplete frame or a large one, and everything after it, go to the reader as before, so the
reader task sees the remaining frames in the order sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from openflash.workers import payloads, protocol
from openflash.workers.calls import Reply
from openflash.workers.lifecycle import Worker
from openflash.workers.protocol import HEADER, Frame

__all__ = ["ReplyTap", "settle"]

_REPLIES = frozenset({protocol.RESULT, protocol.ERROR})


class ReplyTap:
    """Sits in front of ``reader.feed_data``; ``on_reply`` gets each reply taken early."""

    def __init__(self, reader: asyncio.StreamReader, on_reply: Callable[[Frame], None]) -> None:
        self.reader = reader
        self.on_reply = on_reply
        self.between_frames = False  # the reader task waits for a header, nothing consumed
        self._feed = reader.feed_data
        reader.feed_data = self._fed  # type: ignore[method-assign,assignment]

    async def read(self) -> Frame | None:
        """The next frame the tap did not take (protocol.read_frame)."""
        self.between_frames = True
        try:
            return await protocol.read_frame(self.reader, on_header=self._inside)
        finally:
            self.between_frames = False

    def _inside(self) -> None:
        self.between_frames = False

    def _fed(self, data: bytes) -> None:
        buffered = getattr(self.reader, "_buffer", None)
        if self.between_frames and isinstance(buffered, bytearray) and not buffered:
            offset, end = 0, len(data)
            while end - offset >= HEADER.size:
                kind, call_id, size = HEADER.unpack_from(data, offset)
                start = offset + HEADER.size
                if kind not in _REPLIES or size >= payloads.PREALLOCATE or start + size > end:
                    break
                offset = start + size
                self.on_reply(Frame(kind, call_id, data[start:offset]))
            if offset == end:
                return
            data = data[offset:]
        self._feed(data)


def settle(worker: Worker, frame: Frame, instance_home: dict[str, Worker]) -> bool:
    """A RESULT or ERROR frame's call resolved: its timer cancelled, its future given the
    reply (unless its caller gave up); False when no call of ``worker`` waits for it (it timed
    out already). An ERROR for a call that sent its function leaves the function unloaded."""
    call = worker.in_flight.pop(frame.call_id, None)
    if call is None:
        return False
    if call.timer is not None:
        call.timer.cancel()
    call.wire = None  # nothing more to signal
    if frame.kind == protocol.ERROR and call.sent_blob:
        worker.loaded.discard(call.target)  # the worker may not have kept it
        if instance_home.get(call.target) is worker:
            del instance_home[call.target]
    assert call.future is not None
    if not call.future.done():
        call.future.set_result(Reply(frame.kind == protocol.RESULT, frame.payload))
    return True
