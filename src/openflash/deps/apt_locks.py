"""apt's own locks held by another process (an orphaned or suspended apt-get): waited for, told,
and bounded, instead of failing the build at once.

apt refuses, rather than waits, when another process holds one of its locks (its index folder's
``lists/lock``, the .deb cache's ``archives/lock``, dpkg's ``lock-frontend``): "E: Could not get
lock PATH. It is held by process N (NAME)". ``run_waiting`` runs an apt command; when it fails that
way, it waits until the lock is free (asked of the kernel with ``F_GETLK``, which takes nothing),
runs it again, and so on: after ``NOTICE_AFTER_S`` it says "waiting for apt's lock held by pid N
(...)" once (the progress sink and the ``openflash`` logger), and past ``FLASH_APT_LOCK_TIMEOUT``
seconds it fails with SystemDependencyError naming that pid and what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from openflash import _subprocess
from openflash._settings import apt_lock_timeout
from openflash.errors import SystemDependencyError

__all__ = ["NOTICE_AFTER_S", "LockHeld", "lock_held", "lock_holder", "run_waiting"]

logger = logging.getLogger("openflash")

#: How long a build waits for apt's lock before saying whose it is.
NOTICE_AFTER_S = 3.0
_POLL_S = (0.05, 0.5)  # first and longest pause between looks at the lock
_HELD = re.compile(r"Could not get lock (?P<path>/\S+?)\.? It is held by process (?P<pid>\d+)")
_UNNAMED = re.compile(r"Could not get lock (?P<path>/\S+?)(?: - |\.|\s*$)", re.MULTILINE)
#: ``struct flock`` on Linux (l_type, l_whence, l_start, l_len, l_pid), padded to its size.
_FLOCK = struct.Struct("@hhqqi4x")


@dataclass(frozen=True)
class LockHeld:
    """An apt lock another process holds: the lock file, and its holder as apt named it."""

    path: Path
    pid: int | None


def lock_held(output: str) -> LockHeld | None:
    """The lock apt's ``output`` says it could not get, or None (pure)."""
    match = _HELD.search(output) or _UNNAMED.search(output)
    if match is None:
        return None
    pid = match.groupdict().get("pid")
    return LockHeld(Path(match["path"]), int(pid) if pid else None)


def lock_holder(path: Path) -> int | None:
    """The pid holding a POSIX write lock on ``path`` (as apt takes them), or None when it is
    free (or gone); asks the kernel (``F_GETLK``) and takes nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return None
    finally:
        os.close(fd)
    kind, _, _, _, pid = _FLOCK.unpack(answer)
    if kind == fcntl.F_UNLCK:
        return None
    return pid if pid > 0 else -1  # -1: held through an open file description (no pid)


def run_waiting(
    run: Callable[[], _subprocess.Completed], bound: float | None = None
) -> _subprocess.Completed:
    """``run()`` (an apt command, not checked), again each time apt says another process
    holds its lock, once that lock is free; ``bound`` seconds at most in all (None:
    FLASH_APT_LOCK_TIMEOUT; 0 or less: no bound). Raises SystemDependencyError past it."""
    limit = apt_lock_timeout() if bound is None else bound
    started = time.monotonic()
    told = False
    while True:
        done = run()
        held = None if done.ok else lock_held(done.stdout + done.stderr)
        if held is None:
            return done
        pause = _POLL_S[0]
        while True:
            pid = lock_holder(held.path) or held.pid
            waited = time.monotonic() - started
            if limit > 0 and waited >= limit:
                raise _gave_up(held.path, pid, waited, limit)
            if not told and waited >= NOTICE_AFTER_S:
                told = True
                text = f"waiting for apt's lock held by {_who(pid)} ({held.path})"
                _subprocess.report(text)
                logger.warning("openflash: %s", text)
            time.sleep(pause)
            pause = min(pause * 2, _POLL_S[1])
            if lock_holder(held.path) is None:
                break  # free: apt is asked again (another may take it first: then we wait on)


def _who(pid: int | None) -> str:
    if pid is None or pid < 0:
        return "another process"
    name = _cmdline(pid)
    state = " (stopped)" if _stopped(pid) else ""
    return f"pid {pid}{state}" + (f": {name}" if name else "")


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        words = raw.decode(errors="replace").split("\0")
        text = " ".join(w for w in words if w)
        return text if len(text) <= 80 else text[:79] + "…"
    return ""


def _stopped(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state in ("T", "t")
    return False


def _gave_up(path: Path, pid: int | None, waited: float, limit: float) -> SystemDependencyError:
    if pid is not None and pid > 0 and _stopped(pid):
        advice = f"pid {pid} is stopped (Ctrl-Z or SIGSTOP): resume it (kill -CONT {pid}) or end it"
    elif pid is not None and pid > 0:
        advice = f"wait for pid {pid} to finish, or end it if it is left over (kill {pid})"
    else:
        advice = "end the apt process that holds it"
    return SystemDependencyError(
        f"gave up after {waited:.0f} s waiting for apt's lock held by {_who(pid)} ({path})",
        hint=f"{advice}; or raise FLASH_APT_LOCK_TIMEOUT (now {limit:g} s; 0 waits for ever)",
    )
