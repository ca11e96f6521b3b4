"""A worker's lifeline: it dies, with everything it started, when its pool's process dies.

A worker (``workers.child``), a template (``workers.forkserver``) and a worker forked from a
template each lead a process group (a session) of their own, so that the pool's one ``killpg``
stops them with the processes the user's functions started. That covers a stop and a crash of
the worker; this module covers the death of the process that owns it, its *guardian* (a
SIGKILLed ``flash run``, a ``python a.py`` that exits while a call still runs, a Ray actor),
after which nobody would be left to send that ``killpg``. Two ways, either enough:

- ``PR_SET_PDEATHSIG``, where the guardian is the parent (a spawned worker, a template): the
  kernel sends ``LIFELINE_SIGNAL`` (a real-time signal no program uses by default) when the
  parent exits; its handler checks that the guardian *process* is gone (the kernel also sends it
  when only the thread that started this process ends, while the process lives on) and then
  kills this process tree. It runs in the main thread, between two bytecodes or out of a
  blocking call such as ``time.sleep``.
- a watchdog thread (``watch``), independent of the worker's event loop and of the user's code
  (an ``async def`` that blocks the loop with ``time.sleep`` does not stop it): it waits on a
  pidfd of the guardian (polling where there is none) and kills the tree when it has gone. A
  template has no such thread (forking a process with threads is unsafe, see
  ``workers.forkserver``); its loop only waits on sockets, and its pool closing the socket ends
  it too.

A forked worker's parent is its template, but its guardian is the pool that asked for it (a
template that dies alone leaves its workers' calls running, backends/templates.py): it has the
watchdog only, as the death signal would fire with the template.

The guardian is named by the starter (``OPENFLASH_PARENT_PID``) and checked once armed: one
that died before the worker started is noticed at once, not never (the race
``PR_SET_PDEATHSIG`` alone leaves open, and a pid taken over by another process meanwhile:
a spawned worker's guardian must still be its parent).

"Kills the tree": ``SIGKILL`` to every descendant (read from ``/proc``, so that a child that
started a session of its own goes too) and to the rest of this process group, this process
last. A process that does not lead its group kills only itself and its descendants.

Standard library only: it runs in the worker's interpreter.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import threading
import time
from typing import Any

__all__ = [
    "LIFELINE_SIGNAL",
    "PARENT_VARIABLE",
    "PIDFD_VARIABLE",
    "arm",
    "descendants",
    "expected_guardian",
    "guardian",
    "kill_others",
    "kill_tree",
]

#: The variable naming the pid of the process whose death the worker dies with.
PARENT_VARIABLE = "OPENFLASH_PARENT_PID"
#: Instead, in a PID namespace of its own: an inherited pidfd of that process, which the
#: namespace's launcher opened outside, where the pid means something (workers/namespace.py).
PIDFD_VARIABLE = "OPENFLASH_PARENT_PIDFD"
#: What the kernel sends when the parent dies (prctl PR_SET_PDEATHSIG).
LIFELINE_SIGNAL = signal.SIGRTMIN + 5
PR_SET_PDEATHSIG = 1
#: How often the watchdog looks where there is no pidfd.
POLL_S = 0.25

_guardian: int | None = None
_pidfd: int | None = None
#: ``_pidfd`` was handed in from outside this PID namespace (the guardian's pid means nothing
#: here); a worker forked from a template there keeps watching it (its guardian: the same pool).
_from_outside = False


def expected_guardian() -> int:
    """The guardian the starter named (``OPENFLASH_PARENT_PID``), else the current parent."""
    named = os.environ.get(PARENT_VARIABLE, "")
    return int(named) if named.isdigit() else os.getppid()


def guardian() -> int | None:
    """The pid this process dies with, once armed."""
    return _guardian


def arm(pid: int | None = None, *, death_signal: bool = True, watch: bool = True) -> None:
    """Die with process ``pid`` (default: ``expected_guardian()``): with ``death_signal`` (it
    must then be the parent) the kernel's signal, with ``watch`` the watchdog thread. If it is
    already gone, the tree is killed now."""
    global _guardian, _pidfd, _from_outside
    _guardian = expected_guardian() if pid is None else pid
    os.environ.pop(PARENT_VARIABLE, None)  # not for the processes the user's code starts
    handed = os.environ.pop(PIDFD_VARIABLE, "")
    if handed.isdigit():  # in a PID namespace of its own (workers/namespace.py)
        _pidfd, _from_outside = int(handed), True
        os.set_inheritable(_pidfd, False)
    elif not _from_outside:
        if _pidfd is not None:  # armed before the fork that made this process: the template's
            with contextlib.suppress(OSError):
                os.close(_pidfd)
        try:
            _pidfd = os.pidfd_open(_guardian)
        except ProcessLookupError:
            kill_tree()
        except (OSError, AttributeError):  # no pidfd on this kernel: poll
            _pidfd = None
    if death_signal and not _from_outside:  # inside, the parent is the namespace's init
        with contextlib.suppress(OSError, ValueError, AttributeError):
            signal.signal(LIFELINE_SIGNAL, _on_signal)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(LIFELINE_SIGNAL), 0, 0, 0)
        if os.getppid() != _guardian:  # gone before the signal was set (or its pid reused)
            kill_tree()
    if not _alive():
        kill_tree()
    if watch:
        threading.Thread(target=_watch, name="openflash-lifeline", daemon=True).start()


def _alive() -> bool:
    if _guardian is None:
        return True
    if _pidfd is not None:
        poller = select.poll()
        poller.register(_pidfd, select.POLLIN)
        return not poller.poll(0)
    try:
        os.kill(_guardian, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _on_signal(signum: int, frame: Any) -> None:
    if not _alive():
        kill_tree()


def _watch() -> None:
    if _pidfd is not None:
        poller = select.poll()
        poller.register(_pidfd, select.POLLIN)
        while not poller.poll():
            pass
    while _alive():
        time.sleep(POLL_S)
    kill_tree()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found, then theirs), read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill_others() -> None:
    """SIGKILL this process's descendants and the rest of its process group (if it leads one):
    what a worker's calls started, when the worker ends."""
    me = os.getpid()
    for pid in descendants(me):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if os.getpgrp() != me:
        return
    try:
        members = os.listdir("/proc")
    except OSError:
        return
    for entry in members:
        if entry.isdigit() and int(entry) != me:
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == me:
                    os.kill(int(entry), signal.SIGKILL)


def kill_tree() -> None:
    """SIGKILL this process's descendants and its process group (if it leads one), then itself."""
    kill_others()
    os.kill(os.getpid(), signal.SIGKILL)
