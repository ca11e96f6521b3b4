"""Polls of a worker's socket while it is lent (runtime/lanes.py): its caller's busy watch for a
reply (``ReplySpin``, ``FLASH_REPLY_SPIN_US``), and its lender's check that it has not ended.

Right after a lane sends a call, its caller's thread watches the worker's socket with
non-blocking polls for at most the spin (250 µs by default) and, as the reply comes, the lane
reads it and settles the call's future there: the caller's ``await`` then never suspends. No
sleep and wake-up of the caller's thread (tens of microseconds on a virtual machine, as much as
the rest of a warm call), no trip through the loop's selector, callbacks and task wake-up. Each
poll is followed by ``sched_yield``, so that a worker the kernel woke on this CPU (as it does
for a sender it expects to sleep) runs at once.

The spin runs only when the caller's loop has nothing else ready to run (asyncio's ready queue
is empty), this process may use more than one CPU (on one, spinning would only keep the worker
from running), and the lane's last reply came within the spin. Meanwhile the loop's other
descriptors and timers wait, at most the spin. A reply that does not come in time is read by the
loop as any other, and the next calls wait through the loop until one comes in time again.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from typing import Any

__all__ = ["ReplySpin", "ended"]

_GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL


class ReplySpin:
    """The busy watch of one lane's socket (descriptor ``fd``, owned by the lane)."""

    __slots__ = ("_poll", "quick", "spin", "useful")

    def __init__(self, fd: int) -> None:
        #: Whether the lane's last reply came within the spin (seconds; the last one asked).
        self.quick = True
        self.spin = 0.0
        #: Whether spinning can help: another CPU runs the worker meanwhile.
        self.useful = len(os.sched_getaffinity(0)) > 1
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        self._poll = poller.poll

    def wait(self, loop: asyncio.AbstractEventLoop, spin: float) -> bool:
        """Called on ``loop`` right after a call was sent: True once the socket has something
        to read (the lane reads it now), within ``spin`` seconds; False at once when spinning
        would not help or would hold up ``loop``'s ready callbacks, or once ``spin`` passed
        (the loop reads the reply)."""
        self.spin = spin
        if not (spin and self.quick and self.useful):
            return False
        ready = getattr(loop, "_ready", None)  # asyncio's callbacks ready to run
        if ready is None or ready:
            return False
        poll, deadline = self._poll, time.monotonic() + spin
        try:
            while not poll(0):
                os.sched_yield()
                if time.monotonic() > deadline:
                    self.quick = False
                    return False
        except OSError:  # (closed meanwhile: given back) the loop's path
            return False
        return True

    def answered(self, took: float) -> None:
        """A reply came ``took`` seconds after its call (read by the loop or after a spin)."""
        self.quick = took < self.spin


def ended(transport: Any) -> bool:
    """Whether the worker's end of ``transport``'s socket is closed (it exited), polled: nothing
    read, not even peeked (a peek would take a copy of a result's descriptor on its way)."""
    sock = getattr(transport, "_sock", None)  # None once it is closed: its reader saw the end
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    return any(events & _GONE for _, events in poller.poll(0))
