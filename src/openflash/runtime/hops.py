"""A call from an event loop other than the runtime's: one hop to the runtime's loop, one back.

A script's own loop (``asyncio.run``) is not the runtime's, which runs on a thread of its own
(runtime/core.py). ``across`` hands a call over with one ``call_soon_threadsafe`` of a plain
callback; on the runtime's loop that callback starts the call on its pool, which sends it at once
when a worker has room (``Pool.start``), and the call's reply resolves the caller's future with
one ``call_soon_threadsafe`` back, from the moment the pool settles it: no Task, no concurrent
future, no loop iteration between (issue 25, item 2). A call for a pool that is not ready (an
endpoint's first call: its build, its progress lines, its worker's start) runs as a task of the
runtime's loop as before, its outcome passed back the same way.

Cancelling the caller's await (``asyncio.wait_for``, ``Task.cancel``) cancels the call on the
runtime's loop: a task is cancelled, a call running in a worker is interrupted there
(workers/cancels.py). A reply that arrives after its caller's loop closed is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from openflash.workers import cancels, events
from openflash.workers.calls import Call, Reply

__all__ = ["Begin", "Relayed", "across"]


class Relayed(asyncio.Future[Reply]):
    """A call's future on the runtime's loop that, once it has its reply or error, passes it to
    the caller's loop at once (its own done-callbacks would wait for another loop iteration)."""

    __slots__ = ("_hop",)

    def __init__(self, hop: _Hop, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._hop = hop

    @property
    def caller(self) -> asyncio.AbstractEventLoop:
        """The loop its caller awaits on (runtime/lanes.py lends a worker to it)."""
        return self._hop.caller

    def set_result(self, result: Reply) -> None:
        super().set_result(result)
        self._hop.back(result, None)

    def set_exception(self, exception: Any) -> None:
        super().set_exception(exception)
        error = self.exception()  # passed on: retrieved (no "never retrieved" log on this side)
        self._hop.back(None, error)

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._hop.back(None, asyncio.CancelledError())  # its caller, if it still waits
        return True


#: On the runtime's loop: start the call, given how to make a ``Relayed`` future; returns the
#: call's pool and that future (the pool settles it), or None and a task that gives the reply.
Begin = Callable[[Callable[[], Relayed]], tuple[Any, "asyncio.Future[Reply]"]]


class _Hop:
    """One call's way across: the caller's loop and future; on the runtime's loop, what runs it."""

    __slots__ = ("caller", "future", "pool", "waiter")

    def __init__(self, caller: asyncio.AbstractEventLoop, waiter: asyncio.Future[Reply]) -> None:
        self.caller = caller
        self.waiter = waiter
        self.pool: Any = None
        self.future: asyncio.Future[Reply] | None = None

    # On the runtime's loop.

    def begin(self, start: Begin) -> None:
        try:
            self.pool, self.future = start(self._relayed)
        except BaseException as e:  # e.g. the pool is shut down: the caller gets it
            self.back(None, e)
            return
        if not isinstance(self.future, Relayed):
            self.future.add_done_callback(self._finished)

    def _relayed(self) -> Relayed:
        return Relayed(self, asyncio.get_running_loop())

    def _finished(self, future: asyncio.Future[Reply]) -> None:
        if future.cancelled():  # by its caller (then nobody waits), or by a stop
            self.back(None, asyncio.CancelledError())
            return
        error = future.exception()
        self.back(None if error is not None else future.result(), error)

    def cancel(self, call: Call) -> None:
        future = self.future
        if future is None or not future.cancel():
            return  # not started, or settled already (its reply goes nowhere)
        if self.pool is not None:
            cancels.cancelled(self.pool, call)  # a call its worker runs is stopped there

    def back(self, reply: Reply | None, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            self.caller.call_soon_threadsafe(_settle, self.waiter, reply, error)


def _settle(
    waiter: asyncio.Future[Reply], reply: Reply | None, error: BaseException | None
) -> None:
    if waiter.done():  # cancelled meanwhile
        return
    if isinstance(error, asyncio.CancelledError):
        waiter.cancel()
    elif error is not None:
        waiter.set_exception(error)
    else:
        assert reply is not None
        waiter.set_result(reply)


async def across(runtime: asyncio.AbstractEventLoop, start: Begin, call: Call) -> Reply:
    """``call``'s reply, from a loop other than ``runtime`` (the runtime's): ``start`` runs there.

    Errors are those of the call (FlashError and its kinds); a cancelled await cancels the call.
    """
    loop = asyncio.get_running_loop()
    hop = _Hop(loop, loop.create_future())
    runtime.call_soon_threadsafe(hop.begin, start)
    try:
        reply = await hop.waiter
    except asyncio.CancelledError:
        with contextlib.suppress(RuntimeError):  # the runtime's loop closed: nothing runs there
            runtime.call_soon_threadsafe(hop.cancel, call)
        raise
    if hop.pool is not None:  # Pool.submit notes these itself
        events.note(worker_pid=call.worker_pid, queue_wait=call.waited)
    return reply
