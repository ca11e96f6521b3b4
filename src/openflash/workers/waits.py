"""Who waits on whom: finding pools that nested calls have deadlocked.

A function running on a worker may call another endpoint (a nested call) and wait for it. A
nested call queued in a *full* pool (at ``workers_max``, nothing starting, no worker with room)
runs once any call running there finishes. If every call running in such a pool waits, directly
or through a chain of running nested calls, on calls queued in full pools of the same kind, none
of them can ever finish: a deadlock. ``Waits.stuck`` finds those pools (the greatest set closed
under that rule); the pool then fails the nested call instead of letting it wait forever.

A call that waits on nothing is assumed to make progress (it may run for a long time, but its
execution timeout bounds it).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Protocol

from openflash.workers.calls import Call

__all__ = ["WaitingPool", "Waits", "stuck_pools"]


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
