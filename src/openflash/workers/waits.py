"""Who waits on whom: finding pools that nested calls have deadlocked.

A function running on a worker may call another endpoint (a nested call) and wait for it. A
nested call queued in a *full* pool (at ``workers_max``, nothing starting, no worker with room)
runs once any call running there finishes. If every call running in such a pool waits, directly
or through a chain of running nested calls, on calls queued in full pools of the same kind, none
of them can ever finish: a deadlock. ``Waits.stuck`` finds those pools (the greatest set closed
under that rule); the pool then fails the nested call instead of letting it wait forever.

A call that waits on nothing is assumed to make progress (it may run for a long time, but its
execution timeout bounds it). Only a nested call joining a queue can make a pool stuck: a worker
that starts, a call that finishes and a worker that dies all add room or replace a worker, so the
pool checks when it queues a nested call (Pool.submit), and fails that call if it is stuck.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Protocol

from openflash.errors import DeadlockError
from openflash.workers.calls import Call
from openflash.workers.lifecycle import PoolConfig

__all__ = ["WaitingPool", "Waits", "deadlock_error", "stuck_pools"]


class WaitingPool(Protocol):
    def saturated(self) -> bool:
        """At workers_max, none starting, and no worker with room for another call."""

    def running(self) -> list[Call]:
        """The calls its workers run now."""

    def has_queue(self) -> bool: ...


def stuck_pools(pools: Iterable[WaitingPool]) -> set[WaitingPool]:
    """The pools whose queued calls can never run."""
    stuck = {p for p in pools if p.saturated() and p.has_queue()}
    while True:
        moving = {p for p in stuck if not all(_blocked(c, stuck) for c in p.running())}
        if not moving:
            return stuck
        stuck -= moving


def _blocked(call: Call, stuck: set[WaitingPool]) -> bool:
    return any(
        _blocked(child, stuck) if child.running else child.pool in stuck for child in call.children
    )


class Waits:
    """The pools of one runtime, for deadlock checks across them."""

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[WaitingPool] = weakref.WeakSet()

    def add(self, pool: WaitingPool) -> None:
        self._pools.add(pool)

    def stuck(self, pool: WaitingPool) -> bool:
        return pool in stuck_pools(list(self._pools))


def deadlock_error(config: PoolConfig, call: Call, running: list[Call]) -> DeadlockError:
    """What the nested ``call`` fails with when its pool (of ``config``) is stuck."""
    assert call.parent is not None
    waiting = ", ".join(sorted({c.label for c in running}))
    return DeadlockError(
        f"the nested call {call.label} on endpoint {config.name!r} was failed: it could never "
        f"run. All {config.workers_max} worker(s) the endpoint may run (workersMax="
        f"{config.workers_max}, max_concurrency={config.max_concurrency}) are busy with calls "
        f"({waiting}) that wait on nested calls, this one made by {call.parent.label} among them"
    )
