"""What a pool carries: a call (what to run, with which arguments) and its reply."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from openflash.workers import protocol

__all__ = ["Call", "Reply"]


class Reply(NamedTuple):
    """A worker's answer: ``ok`` with a pickled result, or not with an encoded error."""

    ok: bool
    payload: bytes


@dataclass(eq=False)
class Call:
    """One call of a function or method; the pool fills in the fields from ``future`` on."""

    #: protocol.OP_FUNCTION or protocol.OP_METHOD
    op: str
    #: the function's content id, or the instance's id
    target: str
    #: the pickled function or class (sent to a worker only once)
    blob: bytes
    #: the pickled ``(args, kwargs)`` (a Packed: large buffers out of band, sent as they are)
    args: bytes | protocol.Packed
    #: how errors name the call, e.g. ``process()`` or ``Model.predict()``
    label: str
    #: the file the function or class comes from, for remote tracebacks
    source: str | None = None
    method: str = ""
    init_args: bytes | protocol.Packed | None = None
    future: asyncio.Future[Reply] | None = None
    sent_blob: bool = False
    timer: asyncio.TimerHandle | None = None
    #: The pool it was submitted to, and whether a worker runs it (else it is queued).
    pool: Any = None
    running: bool = False
    #: For a call made by another call's function (a nested call): that call.
    parent: Call | None = None
    #: The nested calls this call's function is waiting on.
    children: set[Call] = field(default_factory=set)
    #: The modules its result is for, where not the pool's caller's (a nested call's worker).
    caller_modules: tuple[str, ...] | None = None
    #: Whether the caller streams its items (a generator function): ITEM frames, then RESULT.
    stream: bool = False
    #: Called (on the pool's loop) with each ITEM and PROGRESS frame the call's worker sends.
    on_frame: Callable[[Any], None] | None = None
    #: Once sent: how to write a frame to its worker, and its call id there (CREDIT, CANCEL).
    wire: tuple[Callable[[bytes], None], int] | None = None
    #: When it was queued (loop time), and once sent: its worker's pid and its wait in the queue.
    queued_at: float = 0.0
    worker_pid: int | None = None
    waited: float | None = None
    #: What its caller wants done when a worker takes it (events.call_taken, read at submit).
    on_taken: Callable[[], None] | None = None
    #: What its caller wants done if a pool gives it back untaken (events.call_handed_back).
    on_handed_back: Callable[[], None] | None = None

    def signal(self, kind: int) -> None:
        """Send its worker a CREDIT or CANCEL frame for it (on the pool's loop)."""
        if self.wire is not None:
            write, call_id = self.wire
            write(protocol.encode(kind, call_id))
