"""The job journal's files: private to their owner, and held by one server at a time.

``.flash/`` is 0700 and the journal's files (``jobs.sqlite3``, its ``-wal`` and ``-shm``, and
``jobs.lock``) are 0600, whatever the umask, and a folder or file another user owns (or a symlink
in their place) is refused: a job planted in the journal would run as whoever serves the project.

``jobs.lock`` is held (``flock``) by the ``flash run`` serving the project for its whole life,
and says who that is (its pid, then its address). A second ``flash run`` on the same project
refuses to start and names the first; without the lock it would resume the live server's jobs and
run them twice. The kernel releases the lock when its holder exits, however it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Any

from openflash.errors import FlashError

__all__ = ["JournalBusyError", "JournalLock", "private_file", "private_folder"]

LOCK_NAME = "jobs.lock"
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class JournalBusyError(FlashError):
    """Another ``flash run`` holds this project's job journal."""

    hint = "stop the other flash run first, or call it at its address"


def private_folder(path: Path) -> None:
    """``path`` as a folder of this user's, 0700 (made if missing, tightened if looser)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise FlashError(
            f"{path} is not a folder (a symlink or a file is in its place)",
            hint=f"remove {path}; flash run makes the folder itself",
        )
    _check_owner(path, info)
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def private_file(path: Path, *, create: bool) -> None:
    """``path`` as a file of this user's, 0600 (made empty if missing and ``create``)."""
    try:
        fd = os.open(path, _OPEN_FLAGS if create else (os.O_RDWR | os.O_NOFOLLOW), 0o600)
    except FileNotFoundError:
        return
    except OSError as e:
        raise FlashError(
            f"{path} cannot be opened as a plain file: {e.strerror}",
            hint=f"remove {path} (a symlink is never followed there)",
        ) from e
    try:
        info = os.fstat(fd)
        _check_owner(path, info)
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class JournalLock:
    """The lock beside a project's journal, held for this process's life (or ``release``)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: Path) -> JournalLock:
        """Hold ``folder/jobs.lock``; JournalBusyError naming the holder where another has it."""
        private_folder(folder)
        path = folder / LOCK_NAME
        private_file(path, create=True)
        fd = os.open(path, _OPEN_FLAGS, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise JournalBusyError(
                f"another flash run ({_describe(holder)}) is serving this project and holds its "
                f"job journal {folder / 'jobs.sqlite3'}; a second one would run its jobs again"
            ) from None
        lock = cls(path, fd)
        lock.record(pid=os.getpid())
        return lock

    def record(self, **fields: Any) -> None:
        """Say who holds the lock (pid, host, port): what a refused second server shows."""
        if self._fd is None:
            return
        data = json.dumps({**_read(self._fd), **fields}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the flock goes with the last descriptor
            self._fd = None


def _read(fd: int) -> dict[str, Any]:
    try:
        value = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    pid, host, port = holder.get("pid"), holder.get("host"), holder.get("port")
    where = f"at http://{host}:{port}" if host and port else "still starting, no port yet"
    return f"pid {pid}, {where}" if pid else "a process that has not said who it is yet"


def _check_owner(path: Path, info: os.stat_result) -> None:
    me = os.geteuid()
    if info.st_uid != me:
        raise FlashError(
            f"{path} belongs to uid {info.st_uid}, not to uid {me} who runs flash run; the job "
            "journal is not used when another user could have written jobs into it",
            hint=f"remove {path} (or give it back to uid {me}) and start flash run again",
        )
