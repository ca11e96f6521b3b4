"""The processes that start workers keep their environment from them: not dumpable.

A worker outside the namespace mode (no system layer, no volume, or ``FLASH_NAMESPACES=off``)
shares its caller's PID namespace and user id, so by default it could read the caller's
``/proc/<pid>/environ`` (``FLASH_API_KEY``, ``RUNPOD_API_KEY``, cloud credentials), ``mem``,
``maps`` and ``fd/``, and attach a debugger to it. A process marked not dumpable
(``prctl(PR_SET_DUMPABLE, 0)``) fails the kernel's ptrace access check for every other process
without ``CAP_SYS_PTRACE``, and its ``/proc/<pid>/*`` files belong to root (proc_pid(5),
PR_SET_DUMPABLE(2const)): those reads are refused with EACCES, and ``ptrace`` attach with EPERM.

What stays: ``/proc/<pid>/status``, ``stat``, ``statm`` and ``cmdline`` (world-readable, read by
``flash env`` and the memory cap for other processes); the process's own ``/proc/self`` files
except ``environ`` and ``mem`` (``fd/``, ``fdinfo/``, ``maps``, ``smaps_rollup``: nothing of
openflash reads the others, and ``os.environ`` is not read from /proc); children it starts with
``exec`` (workers, templates, uv, apt), which the kernel makes dumpable again. What goes: core
dumps of that process, and py-spy or gdb attached by its own user (root still can); set
``FLASH_NON_DUMPABLE=off`` for those.

Which processes (``FLASH_NON_DUMPABLE``): ``server`` (the default) marks ``flash run``, which
openflash owns and which holds the server's keys; ``all`` also marks a Python program's process
when its runtime starts. A program is the user's own process, not openflash's: a library turning
off its core dumps and debuggers at its first call would surprise, so that is asked for.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

__all__ = ["PROTECTION", "is_dumpable", "mark_not_dumpable", "protect"]

logger = logging.getLogger(__name__)

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4

#: What keeps a caller's environment from its workers, per mode (``flash check`` prints it).
PROTECTION = {
    "server": "flash run is not dumpable (its /proc/<pid>/environ and memory are root's to read)"
    "; a Python program's process is readable by workers outside the namespace mode "
    "(FLASH_NON_DUMPABLE=all hides it too)",
    "all": "flash run and Python programs are not dumpable (their /proc/<pid>/environ and "
    "memory are root's to read)",
    "off": "nothing beyond the namespace mode: FLASH_NON_DUMPABLE=off leaves flash run and "
    "programs readable by their workers outside it",
}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # (a libc that cannot be loaded: nothing to mark with)
        return None


def is_dumpable() -> bool | None:
    """This process's dumpable attribute (``PR_GET_DUMPABLE``); None off Linux."""
    libc = _libc()
    if libc is None:
        return None
    return bool(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))


def mark_not_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)`` on this process (all its threads; forks without ``exec``
    inherit it). True if it is now not dumpable; False off Linux or if the kernel refused (a
    debug line says why), never an error: the mark hardens, it is not required to run."""
    libc = _libc()
    if libc is None:
        return False
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.debug("PR_SET_DUMPABLE refused: errno %d", ctypes.get_errno())
        return False
    return True


def protect(mode: str, role: str) -> bool:
    """Mark this process not dumpable if ``mode`` (``Settings.non_dumpable``: server, all, off)
    covers ``role`` (``"server"`` for ``flash run``, ``"program"`` for a runtime's process).
    True if marked."""
    if mode == "all" or (mode == "server" and role == "server"):
        return mark_not_dumpable()
    return False
