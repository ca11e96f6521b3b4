"""When a worker is lent to another event loop, and which calls take it (runtime/lanes.py).

The runtime lends a worker (``lend``, on its own loop) when a call from another loop (a
script's ``asyncio.run``, hops.py) leaves it idle with nothing queued, the call was plain and
the worker's socket is asyncio's (a local worker; not Ray's pipes), with nothing buffered either
way. On that loop, ``send`` puts a plain call on the lane (``plain``: a function's call with
small arguments in one pickle, no stream, no progress, not nested, not a call a server follows);
any other call hops as before.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from openflash.runtime import hops
from openflash.runtime.lanes import Lane, lanes_of
from openflash.workers import events, protocol
from openflash.workers.call_frames import small
from openflash.workers.calls import Call, Reply
from openflash.workers.lifecycle import Worker, WorkerState

__all__ = ["lend", "plain", "send"]


def plain(call: Call) -> bool:
    """Whether ``call`` may go on a lane: a function's call with small arguments in one pickle
    (no out-of-band buffer, no shared memory), no stream, no progress, not nested, and not a
    call a server follows (its note and hooks are the runtime's loop's)."""
    return (
        _plain_shape(call)
        and events.call_note.get() is None
        and events.call_taken.get() is None
        and events.call_handed_back.get() is None
    )


def _plain_shape(call: Call) -> bool:
    return (
        call.op == protocol.OP_FUNCTION
        and not call.stream
        and call.on_frame is None
        and call.parent is None
        and small(call)
    )


def send(
    loop: asyncio.AbstractEventLoop, runtime: Any, endpoint: Any, call: Call
) -> tuple[Lane, asyncio.Future[Reply]] | None:
    """On ``loop`` (not ``runtime``'s): ``call`` sent on a worker of ``endpoint``'s pool lent to
    it, and the future of its reply (whose cancelled await calls ``Lane.cancel``); None when it
    cannot go there (it hops). An endpoint naming local sources hops: a call checks them."""
    lanes = lanes_of(loop)
    if not lanes or runtime._closing:
        return None
    lane = lanes.get(runtime._endpoint_pools.get(endpoint))
    if lane is None or not plain(call) or any("file:" in d for d in endpoint.dependencies):
        return None
    waiter = lane.send(call)
    if waiter is None:
        return None
    lane.spin.settle(call, runtime.settings.reply_spin)
    return lane, waiter


def lend(pool: Any, worker: Worker, frame: protocol.Frame) -> None:
    """On the pool's loop, as ``frame`` (a reply) is about to leave ``worker`` idle with nothing
    queued: lend it to the loop its call came from if that is another loop (hops.Relayed) and
    the call was plain (a caller whose calls never are would take it back at its next call).
    Done before the caller hears of the reply, so that the lane is open on its loop before the
    caller's next call."""
    call = worker.in_flight.get(frame.call_id)
    # The runtime's own loop's calls (``flash run``'s) leave at the first test: a reply's path.
    if call is None or type(future := call.future) is not hops.Relayed:
        return
    if frame.kind != protocol.RESULT and call.sent_blob:
        return  # an error for a call that brought its function: the worker may lack it
    if not _plain_shape(call) or worker.lane is not None or pool.closed:
        return
    caller = future.caller
    handle = worker.handle
    if handle is None or worker.state is not WorkerState.READY or caller.is_closed():
        return
    lanes = lanes_of(caller)
    held = lanes.get(pool) if lanes else None
    if held is not None and held.lent:
        return  # that loop holds one of this pool's workers already
    transport: Any = getattr(handle.writer, "transport", None)  # Ray's writer has none
    sock = getattr(transport, "_sock", None)  # asyncio's socket transport (not Ray's pipes)
    buffered = getattr(handle.reader, "_buffer", None)
    if (
        not isinstance(sock, socket.socket)
        or not isinstance(buffered, bytearray)
        or buffered
        or transport.is_closing()
        or not transport.is_reading()
        or transport.get_write_buffer_size()
        or not _plain_loop(caller)
    ):
        return
    try:
        dup = socket.socket(fileno=os.dup(sock.fileno()))
        dup.setblocking(False)
    except OSError:
        return
    transport.pause_reading()
    lane = worker.lane = Lane(pool, worker, caller, dup)
    try:
        caller.call_soon_threadsafe(lane.open)
    except RuntimeError:  # it closed meanwhile
        lane.reclaim()


def _plain_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """A loop that watches descriptors itself (asyncio's selector loop)."""
    return isinstance(loop, asyncio.SelectorEventLoop)
