"""A lane call's caller watching its worker's socket for the reply, busy (FLASH_REPLY_SPIN_US).

A thread woken from sleep costs tens of microseconds on a virtual machine, as much as the rest of
a warm call. Right after a lane call is sent (runtime/lending.py ``send``), its caller may
instead poll the worker's socket without blocking, in a tight loop, for at most the spin: a reply
that comes meanwhile is read there (runtime/lanes.py) and the call's ``await`` never suspends (no
sleep, no trip through the loop's selector). Each poll is followed by ``sched_yield``, so that a
worker the kernel woke on this CPU (as it does for a sender it expects to sleep) runs at once.
``ReplySpin`` holds a lane's rules for when that is worth it and harms nothing:

- the loop has nothing else to run: no ready callback, and no task factory (Python 3.12's
  ``eager_task_factory`` runs a new task's first step inside ``create_task``, where the tasks a
  ``gather`` has yet to create are in no queue: spinning would run their calls one by one);
- the loop ran its selector within the spin: a call settled by a spin returns without its loop
  running, so a run of them is cut by a call that waits in the loop, for the loop's sockets,
  timers and the callbacks other threads sent it (and this thread sleeps there, letting the
  others take the GIL);
- more than one CPU is the caller's thread's (on one, spinning keeps the worker from running):
  its affinity, capped by its cgroup's CPU quota (``cpus``: ``docker run --cpus=1`` leaves every CPU
  in the affinity and one CPU of time, which a spin would spend, its loop's timers then 20 ms
  late as the kernel throttled the group, measured);
- the function's own calls have been quick: each spin that misses its reply doubles the replies
  in a row within the spin that the function's calls need before they spin again (from 1, at
  most ``NEEDED_MAX``); each spin that sees its reply come halves it. A slow function's calls do
  not stop a quick one's from spinning, and a function whose calls alternate quick and slow
  stops spinning in vain.

A spin stops as soon as the runtime takes the worker back (``returned``): its reply is then the
pool's to read (runtime/lanes.py ``reclaim``), and a spin does not count against the function.

"Nothing else ready" is read in asyncio's ``_ready`` (the deque of ready callbacks of CPython's
``BaseEventLoop``, private but unchanged since 3.4); a loop without it never spins, and only
selector loops are lent workers at all (lending.py), never uvloop's. Timers coming due meanwhile
wait at most about two spins: asyncio's selectors wait in whole milliseconds (``EpollSelector``
rounds a timeout up), so its timers are up to a millisecond late anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import select
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NEEDED_MAX", "ReplySpin", "cpus"]

#: The most replies in a row within the spin that a function's calls need before they spin again.
NEEDED_MAX = 64

#: The attribute of a loop that holds when a call on it was first settled by a spin since the loop
#: last ran (``time.monotonic``); a timer due at once clears it as the loop runs.
_UNPOLLED = "_openflash_unpolled"


@dataclass(slots=True)
class _Record:
    """A function's replies on a lane: how many in a row came within the spin, and how many such
    its calls need before they spin."""

    streak: int = 0
    needed: int = 0


class ReplySpin:
    """When the caller of a call on the lane reading descriptor ``fd`` on ``loop`` spins, and
    the spin itself, which calls ``readable`` (the lane's reader) as the socket is readable.
    ``caught``: the spins that saw the socket readable; ``missed``: those that ran to their end
    (each cost the whole spin of CPU)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fd: int, readable: Callable[[], None]
    ) -> None:
        self.loop = loop
        self._readable = weakref.WeakMethod(readable)  # no cycle: the lane closes when collected
        #: FLASH_REPLY_SPIN_US, in seconds (given with each call: the runtime's settings).
        self.seconds = 0.0
        #: Whether another CPU may run the worker meanwhile: read by the first call's caller
        #: (its thread's affinity; the lane is made on the runtime's thread).
        self.cpus: bool | None = None
        self.caught = 0
        self.missed = 0
        #: Set as the runtime takes the worker back (``Lane._return``, either thread).
        self.returned = False
        self._records: dict[str, _Record] = {}  # by function (its calls' target)
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)

    def settle(self, call: Any, seconds: float) -> None:
        """Right after ``call`` (a ``workers.calls.Call``) was sent on the lane: its caller
        watches the worker's socket for the reply, busy, for at most ``seconds``
        (``FLASH_REPLY_SPIN_US``), when that is worth it (module docstring), and the lane reads
        it as it comes, settling the call's future, so that its await does not suspend. A reply
        that does not come in time is read by the loop as any other."""
        self.seconds = seconds
        if not seconds:
            return
        if self.cpus is None:
            self.cpus = cpus() > 1
        if not self.cpus:
            return
        record = self._records.get(call.target)
        if record is None:
            record = self._records[call.target] = _Record()
        if record.streak < record.needed or not self._idle():
            return
        seen = self._watch()
        if seen:
            self.caught += 1
            record.needed //= 2
            readable = self._readable()
            if readable is not None:
                readable()
        elif seen is not None:
            self.missed += 1
            record.needed = min(max(1, 2 * record.needed), NEEDED_MAX)
            record.streak = 0

    def replied(self, now: float, done: Sequence[tuple[Any, Any]]) -> None:
        """Replies read at ``now`` (the loop's time): ``done``, the lane's calls they answer
        with them (each with its ``call`` and ``sent_at``), read here or by the loop."""
        for entry, _ in done:
            record = self._records.get(entry.call.target)
            if record is not None:
                record.streak = record.streak + 1 if now - entry.sent_at < self.seconds else 0

    def _idle(self) -> bool:
        """Whether the loop has nothing else to run and ran its selector within the spin."""
        loop = self.loop
        ready = getattr(loop, "_ready", None)  # asyncio's callbacks ready to run
        if ready is None or ready or loop.get_task_factory() is not None:
            return False
        since: float | None = getattr(loop, _UNPOLLED, None)
        if since is None:
            setattr(loop, _UNPOLLED, time.monotonic())
            loop.call_later(0, _polled, loop)  # a timer, not a ready callback
            return True
        return time.monotonic() - since < self.seconds

    def _watch(self) -> bool | None:
        """Poll the socket, busy, for at most the spin: whether it became readable (or ended);
        None as soon as the lane is ``returned`` (its reply is then the pool's to read)."""
        poll, deadline = self._poller.poll, time.monotonic() + self.seconds
        try:
            while not poll(0):
                os.sched_yield()  # a worker woken on this CPU runs at once
                if self.returned:
                    return None
                if time.monotonic() > deadline:
                    return False
        except OSError:  # the loop's path
            return False
        return True


def _polled(loop: asyncio.AbstractEventLoop) -> None:
    with contextlib.suppress(AttributeError):
        delattr(loop, _UNPOLLED)


def cpus() -> float:
    """The CPUs this thread may use at once: its affinity, capped by the CPU quota of its cgroup
    and of each group above it that is visible (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``
    over ``cpu.cfs_period_us``; quota / period CPUs), the quota read from /proc/self/cgroup and
    the cgroup mounts of /proc/self/mountinfo once per process (about 0.1 ms). Any file missing
    or unreadable caps nothing."""
    return min(float(len(os.sched_getaffinity(0))), _quota_cpus())


@functools.cache
def _quota_cpus() -> float:
    count = float("inf")
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/cgroup") as f:
            paths = [line.rstrip("\n").split(":", 2) for line in f if line.strip()]
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
        for fields in mounts:
            kind, options = fields[fields.index("-") + 1], fields[-1].split(",")
            if kind == "cgroup2":
                path = next((p for _, names, p in paths if not names), None)
            elif kind == "cgroup" and "cpu" in options:
                path = next((p for _, n, p in paths if "cpu" in n.split(",")), None)
            else:
                continue
            root, mount = fields[3], fields[4]
            if path is None or not (path + "/").startswith(root.rstrip("/") + "/"):
                continue
            group = os.path.normpath(os.path.join(mount, os.path.relpath(path, root)))
            while True:  # from its own group up to the mount's root, both included
                count = min(count, _quota(group, v2=kind == "cgroup2"))
                if group == mount or os.path.dirname(group) == group:
                    break
                group = os.path.dirname(group)
    return count


def _quota(group: str, *, v2: bool) -> float:
    """The CPUs ``group``'s own quota allows (infinite where it sets none)."""
    try:
        if v2:
            with open(os.path.join(group, "cpu.max")) as f:
                quota, period = f.read().split()
        else:
            with open(os.path.join(group, "cpu.cfs_quota_us")) as f:
                quota = f.read().strip()
            with open(os.path.join(group, "cpu.cfs_period_us")) as f:
                period = f.read().strip()
        if quota in ("max", "-1"):
            return float("inf")
        return int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return float("inf")
