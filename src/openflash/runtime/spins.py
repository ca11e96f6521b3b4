"""A lane call's caller watching its worker's socket for the reply, busy (FLASH_REPLY_SPIN_US).

A thread woken from sleep costs tens of microseconds on a virtual machine, as much as the rest of
a warm call. Right after a lane call is sent (runtime/lanes.py ``Lane.settle``), its caller may
instead poll the worker's socket without blocking, in a tight loop, for at most the spin: a reply
that comes meanwhile is read there and the call's ``await`` never suspends (no sleep, no trip
through the loop's selector). ``ReplySpin`` holds a lane's rules for when that is worth it.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ReplySpin"]


class ReplySpin:
    """When the caller of a call on the lane reading descriptor ``fd`` on ``loop`` spins, and
    the spin itself, which calls ``readable`` (the lane's reader) as the socket is readable.
    ``caught``: the spins that saw the reply come; ``missed``: those that ran to their end
    without it (each cost the whole spin of CPU)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fd: int, readable: Callable[[], None]
    ) -> None:
        self.loop = loop
        self.readable = readable
        #: FLASH_REPLY_SPIN_US, in seconds (given with each call: the runtime's settings).
        self.seconds = 0.0
        #: Whether another CPU may run the worker meanwhile (on one, spinning keeps it waiting).
        self.cpus = len(os.sched_getaffinity(0)) > 1
        #: Whether the lane's last reply came within the spin of its call.
        self.quick = True
        self.caught = 0
        self.missed = 0
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)

    def settle(self, call: Any, seconds: float) -> None:
        """Right after ``call`` (a ``workers.calls.Call``) was sent on the lane: its caller
        watches the worker's socket for the reply, busy, for at most ``seconds``
        (``FLASH_REPLY_SPIN_US``; ``start``: when), and the lane reads it as it comes, settling
        the call's future, so that its await does not suspend. A reply that does not come in time
        is read by the loop as any other."""
        if self.start(seconds) and self.watch():
            self.readable()

    def start(self, seconds: float) -> bool:
        """Whether the call just sent spins: only when ``seconds`` is not 0, more than one CPU is
        this process's, the lane's last reply came in time, and the loop has nothing else ready
        to run (asyncio's ready callbacks)."""
        self.seconds = seconds
        if not (seconds and self.quick and self.cpus):
            return False
        ready = getattr(self.loop, "_ready", None)
        return ready is not None and not ready

    def watch(self) -> bool:
        """Poll the socket, busy, for at most the spin: whether it became readable (or ended)."""
        poll, deadline = self._poller.poll, time.monotonic() + self.seconds
        try:
            while not poll(0):
                if time.monotonic() > deadline:
                    self.quick = False
                    self.missed += 1
                    return False
        except OSError:  # the loop's path
            return False
        self.caught += 1
        return True

    def replied(self, took: float) -> None:
        """A reply came ``took`` seconds after its call was sent (read here or by the loop)."""
        self.quick = took < self.seconds
