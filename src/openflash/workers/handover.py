"""A pool's calls when it goes: queued ones handed back to their callers, running ones finished.

A reload that changes an endpoint's dependencies or config replaces its pool (runtime/core.py's
``refresh``). The old pool is *retired*: it takes no more calls; every call still queued there,
which no worker took, is handed back (its caller's ``events.call_handed_back`` hook runs, then
the call fails with a FlashError saying it was handed back), so a journaled job goes to the new
pool instead of failing; calls a worker runs finish on that worker, then the workers stop. For a
moment the endpoint's old workers may run beside the new pool's.

A pool that is stopped (the runtime shuts down) hands its queued calls back the same way; the
calls its workers run fail (server/jobs.py leaves both kinds of job for the next server).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from openflash.errors import FlashError
from openflash.workers import events
from openflash.workers.calls import Call
from openflash.workers.lifecycle import STOP_GRACE_S, WorkerState

if TYPE_CHECKING:
    from openflash.workers.pool import Pool

__all__ = ["fail", "hand_back", "handed_back_error", "retire", "stop"]


def handed_back_error(endpoint: str, why: str) -> FlashError:
    """The error a handed-back call fails with; ``why``: what the pool went through."""
    return FlashError(
        f"endpoint {endpoint!r} {why} before a worker took the call; it was handed back, "
        "never started",
        hint="send the call again; a job of `flash run` is sent again for you",
    )


def hand_back(call: Call, error: FlashError) -> None:
    """Give ``call`` (queued, untaken) back to its caller: its hook, then ``error``."""
    events.taken(call.on_handed_back)
    if call.timer is not None:
        call.timer.cancel()
    if call.future is not None and not call.future.done():
        call.future.set_exception(error)


async def retire(pool: Pool) -> None:
    """Retire ``pool`` (replaced by a reload): queued calls handed back at once, running calls
    left to finish on their workers, then every worker stopped (``Pool.close``)."""
    if pool.closed:
        return
    pool.closed = True  # no new calls, no dispatch, no scaling; results still come in
    error = handed_back_error(pool.config.name, "was replaced by a reload")
    queued, pool.queue = list(pool.queue), type(pool.queue)()
    for call in queued:
        hand_back(call, error)
    running = [c.future for w in pool.workers for c in w.in_flight.values() if c.future]
    if running:  # a stop meanwhile (Pool.close) fails them: the wait ends then too
        await asyncio.wait(running)
    await pool.close()


async def stop(pool: Pool) -> None:
    """Stop ``pool`` (``Pool.close``): queued calls handed back, running ones failed with a
    FlashError, every worker asked to exit and killed past its grace."""
    pool.closed = True
    queued, pool.queue = list(pool.queue), type(pool.queue)()
    for call in queued:
        hand_back(call, handed_back_error(pool.config.name, "was shut down"))
    error = FlashError(
        f"endpoint {pool.config.name!r} was shut down before the call finished",
        hint="the openflash runtime is stopping",
    )
    handles = []
    for worker in list(pool.workers):
        for call in worker.in_flight.values():
            fail(call, error)
        worker.in_flight.clear()
        if worker.state is WorkerState.STARTING and worker.task is not None:
            worker.task.cancel()
        if worker.handle is not None:
            pool._stop(worker, "the pool was closed")
            handles.append(worker.handle)
    if handles:
        await asyncio.wait(
            [asyncio.ensure_future(h.wait()) for h in handles], timeout=STOP_GRACE_S + 1
        )
    for handle in handles:
        handle.kill()


def fail(call: Call, error: BaseException) -> None:
    """``call`` fails with ``error`` (unless its caller gave up), its timer cancelled."""
    if call.timer is not None:
        call.timer.cancel()
    if call.future is not None and not call.future.done():
        call.future.set_exception(error)
