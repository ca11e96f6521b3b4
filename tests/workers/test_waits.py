"""Deadlock detection over a wait-for graph of calls, on hand-built pools (no processes)."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

from openflash.workers.calls import Call
from openflash.workers.waits import Waits, stuck_pools


@dataclass(eq=False)
class FakePool:
    full: bool = True
    calls: list[Call] = field(default_factory=list)
    queued: list[Call] = field(default_factory=list)

    def saturated(self) -> bool:
        return self.full

    def running(self) -> list[Call]:
        return self.calls

    def has_queue(self) -> bool:
        return bool(self.queued)


def run(pool: FakePool, label: str, parent: Call | None = None) -> Call:
    call = Call("fn", label, b"", b"", label=label, pool=pool, running=True, parent=parent)
    pool.calls.append(call)
    if parent is not None:
        parent.children.add(call)
    return call


def queue(pool: FakePool, label: str, parent: Call) -> Call:
    call = Call("fn", label, b"", b"", label=label, pool=pool, parent=parent)
    pool.queued.append(call)
    parent.children.add(call)
    return call


def test_a_call_waiting_on_its_own_full_pool_is_stuck() -> None:
    a = FakePool()
    outer = run(a, "recurse")
    queue(a, "recurse", outer)
    assert stuck_pools([a]) == {a}


def test_a_pool_with_room_or_a_free_call_is_not_stuck() -> None:
    a = FakePool(full=False)
    queue(a, "recurse", run(a, "recurse"))
    assert stuck_pools([a]) == set()
    b = FakePool()
    queue(b, "recurse", run(b, "recurse"))
    run(b, "busy")  # waits on nothing: it will finish and free its worker
    assert stuck_pools([b]) == set()


def test_a_cycle_through_two_pools_is_stuck() -> None:
    # A's call waits on B's running call, which waits on a call queued in full A.
    a, b = FakePool(), FakePool()
    first = run(a, "first")
    second = run(b, "second", parent=first)
    queue(a, "third", second)
    assert stuck_pools([a, b]) == {a}
    # If B's call waits on nothing, nothing is stuck.
    second.children.clear()
    assert stuck_pools([a, b]) == set()


def test_two_full_pools_waiting_on_each_other() -> None:
    a, b = FakePool(), FakePool()
    x, y = run(a, "x"), run(b, "y")
    queue(b, "x->b", x)
    queue(a, "y->a", y)
    assert stuck_pools([a, b]) == {a, b}
    # A pool that can still start a worker breaks the cycle.
    b.full = False
    assert stuck_pools([a, b]) == set()


def test_waits_keeps_pools_weakly() -> None:
    waits = Waits()
    a = FakePool()
    queue(a, "recurse", run(a, "recurse"))
    waits.add(a)
    assert waits.stuck(a)
    del a
    gc.collect()  # calls and their pool refer to each other
    assert list(waits._pools) == []
