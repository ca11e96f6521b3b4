"""Cancellation that stops work: a call whose caller gave up is interrupted in its worker.

When the awaiting side of a running call is cancelled (``Job.cancel()``, ``/cancel/{id}``, a
cancelled ``await``, leaving ``map`` early), the pool sends its worker CANCEL for it: an async
function gets CancelledError at its next ``await`` and its worker stays. A sync function cannot
be interrupted in its thread (the worker waits for it, child.py), and an async one may ignore the
CancelledError: if the call has not ended FLASH_CANCEL_GRACE_S seconds later, its worker is killed
and replaced, and the other calls it was running fail with a WorkerCrashedError that says why.
This is what Runpod's worker SDK does for a cancelled job, and Modal's ``FunctionCall.cancel``.

The pool never delivers a cancelled call's result: its future is already cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from openflash._settings import cancel_grace
from openflash.workers import protocol
from openflash.workers.calls import Call
from openflash.workers.lifecycle import WorkerState

__all__ = ["cancelled"]


def cancelled(pool: Any, call: Call) -> None:
    """Interrupt ``call`` in its worker if its future was cancelled while a worker ran it
    (called, on the pool's loop, by whoever cancelled it or saw it cancelled: Pool.submit, the
    runtime's hop from another loop). A queued call needs nothing: no worker takes it."""
    future = call.future
    if future is None or not future.cancelled() or not call.running or call.wire is None:
        return
    __, call_id = call.wire
    worker = next((w for w in pool.workers if w.in_flight.get(call_id) is call), None)
    if worker is None:
        return
    call.signal(protocol.CANCEL)
    if call.timer is not None:
        call.timer.cancel()
        call.timer = None
    # FLASH_CANCEL_GRACE_S, read at each cancellation: a bad value is a ConfigError naming it.
    grace = cancel_grace()
    asyncio.get_running_loop().call_later(grace, _kill_if_running, pool, worker, call)


def _kill_if_running(pool: Any, worker: Any, call: Call) -> None:
    if call not in worker.in_flight.values() or worker.handle is None:
        return  # it stopped in time
    if worker.state is WorkerState.DEAD:
        return
    worker.doom = (
        f"killed because {call.label} was cancelled and did not stop within "
        f"{cancel_grace():g} s (FLASH_CANCEL_GRACE_S)"
    )
    worker.state = WorkerState.STOPPING  # no new calls; a replacement starts if needed
    for call_id, running in list(worker.in_flight.items()):
        if running is call:
            del worker.in_flight[call_id]  # cancelled: nobody waits for it
    worker.handle.kill()
    pool._dispatch()
