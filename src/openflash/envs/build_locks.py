"""A store key's build lock: one builder at a time, and waiters that are told and bounded.

The lock is an ``flock`` on ``FLASH_HOME/locks/<kind>-<key>.lock``, taken per call (threads and
processes alike), and the builder holding it writes its pid there. A waiter polls; after
``NOTICE_AFTER_S`` it says whose build it waits for ("waiting for pid N's build of ..."), once,
on the progress sink and the ``openflash`` logger, and after ``FLASH_BUILD_LOCK_TIMEOUT`` seconds
it fails with EnvironmentBuildError naming that pid and what it is doing (a builder stopped with
Ctrl-Z or SIGSTOP never finishes on its own). The kernel releases the lock when its holder exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import Timeout

from openflash import _subprocess
from openflash._settings import build_lock_timeout
from openflash.envs.disk_full import full_error
from openflash.errors import EnvironmentBuildError

__all__ = ["NOTICE_AFTER_S", "hold_build_lock"]

logger = logging.getLogger("openflash")

#: How long a waiter waits before saying whose build it waits for.
NOTICE_AFTER_S = 3.0
_POLL_S = (0.01, 0.2)  # first and longest pause between tries


@contextlib.contextmanager
def hold_build_lock(
    path: Path, what: str, timeout: float | None = None, *, wait: bool = True
) -> Iterator[None]:
    """Hold the lock at ``path`` (for the build of ``what``); ``timeout`` seconds at most of
    waiting (None: FLASH_BUILD_LOCK_TIMEOUT; 0 or less: no bound). ``wait=False`` tries once and
    raises filelock's ``Timeout`` when another holds it (a sweep or a second compiler, which
    skip what is busy)."""
    bound = build_lock_timeout() if timeout is None else timeout
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise full_error(e, path) from e  # a full disk: StoreFullError naming the lock
    try:
        if wait:
            _acquire(fd, path, what, bound)
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Timeout(str(path)) from None
        os.ftruncate(fd, 0)
        try:
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            raise full_error(e, path) from e
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # no stale pid for the next waiter to blame
    finally:
        os.close(fd)  # the flock goes with it


def _acquire(fd: int, path: Path, what: str, bound: float) -> None:
    started = time.monotonic()
    pause, told = _POLL_S[0], False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - started
        if bound > 0 and waited >= bound:
            pid, stopped = _holder(fd)
            raise EnvironmentBuildError(
                f"gave up after {waited:.0f} s waiting for {_whose(pid, stopped)} build of {what}"
                f" (it holds {path})",
                hint=f"{_advice(pid, stopped)}; or raise FLASH_BUILD_LOCK_TIMEOUT (now {bound:g} s;"
                " 0 waits for ever)",
            )
        if not told and waited >= NOTICE_AFTER_S:
            told = True
            text = f"waiting for {_whose(*_holder(fd))} build of {what} (it holds {path})"
            _subprocess.report(text)
            logger.warning("openflash: %s", text)
        time.sleep(pause)
        pause = min(pause * 2, _POLL_S[1])


def _holder(fd: int) -> tuple[str | None, bool]:
    """The holder's pid, from what it wrote, and whether it is stopped."""
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    if not text.isdigit():
        return None, False
    try:
        with open(f"/proc/{text}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return text, False
    return text, state in ("T", "t")


def _whose(pid: str | None, stopped: bool) -> str:
    if pid is None:
        return "another process's (it has not written its pid yet)"
    return f"pid {pid}'s (stopped)" if stopped else f"pid {pid}'s"


def _advice(pid: str | None, stopped: bool) -> str:
    if stopped:
        return f"pid {pid} is stopped (Ctrl-Z or SIGSTOP): resume it (kill -CONT {pid}) or end it"
    return "wait for that build to finish, or end the process building it"
