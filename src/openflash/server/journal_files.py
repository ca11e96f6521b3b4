"""The job journal's files: private to their owner, and held by one server at a time.

``.flash/`` is 0700 and the journal's files (``jobs.sqlite3``, its ``-wal`` and ``-shm``,
``jobs.lock``, ``workers.pids`` and ``results/``) are 0600 (0700), whatever the umask. A folder or
file another user owns, one another user could have written (group- or world-writable, as earlier
versions left them under umask 0), or a symlink in their place, is refused, naming it and its mode:
a job planted in the journal would run as whoever serves the project. Only read bits are tightened.

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

__all__ = ["JournalBusyError", "JournalLock", "check_journal", "private_file", "private_folder"]

LOCK_NAME = "jobs.lock"
#: every file of ``.flash/`` that decides what a server runs, resumes or kills
JOURNAL_FILES = ("jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm", LOCK_NAME, "workers.pids")
RESULTS = "results"
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class JournalBusyError(FlashError):
    """Another ``flash run`` holds this project's job journal."""

    hint = "stop the other flash run first, or call it at its address"


def private_folder(path: Path) -> None:
    """``path`` as a folder of this user's, 0700 (made if missing; read bits of others closed;
    FlashError naming it where another user owns it or could write in it)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise FlashError(
            f"{path} is not a folder (a symlink or a file is in its place)",
            hint=f"remove {path}; flash run makes the folder itself",
        )
    _check_owner(path, info)
    _check_closed(path, info)
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def private_file(path: Path, *, create: bool) -> None:
    """``path`` as a file of this user's, 0600 (made empty if missing and ``create``); FlashError
    naming it where another user owns it, could write it, or a symlink is in its place."""
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
        _check_closed(path, info)
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def check_journal(folder: Path) -> None:
    """Refuse (FlashError naming the file, its owner or mode, and what to do) a ``.flash/`` whose
    journal another user wrote or could have written: the folder, each of ``JOURNAL_FILES`` and
    ``results/`` with every file in it, where present. Made 0700 if missing."""
    private_folder(folder)
    for name in JOURNAL_FILES:
        _check_entry(folder / name, folder=False)
    results = folder / RESULTS
    if _check_entry(results, folder=True):
        with os.scandir(results) as entries:
            for entry in entries:
                _check_entry(Path(entry.path), folder=False)


def _check_entry(path: Path, *, folder: bool) -> bool:
    """Whether ``path`` is there; refused if it is a link or of the wrong kind, another user's,
    or writable by others."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    kind_ok = stat.S_ISDIR(info.st_mode) if folder else stat.S_ISREG(info.st_mode)
    if not kind_ok:
        what = "a folder" if folder else "a plain file"
        raise FlashError(
            f"{path} is not {what} (a symlink or something else is in its place)",
            hint=f"inspect {path} and remove it; flash run makes its own",
        )
    _check_owner(path, info)
    _check_closed(path, info)
    return True


class JournalLock:
    """The lock beside a project's journal, held for this process's life (or ``release``)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: Path) -> JournalLock:
        """Hold ``folder/jobs.lock``; JournalBusyError naming the holder where another has it,
        FlashError where another user wrote or could have written the journal (check_journal)."""
        check_journal(folder)
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


def _check_closed(path: Path, info: os.stat_result) -> None:
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        who = " and ".join(w for b, w in ((0o020, "its group"), (0o002, "every user")) if mode & b)
        raise FlashError(
            f"{path} is mode {mode:04o}: writable by {who}, so another user could have written "
            "jobs into the job journal (as earlier versions left it under umask 0); it is not "
            "used",
            hint=f"inspect {path}, then remove it or move it aside (flash run makes a private "
            f"one); only if you are sure nobody else wrote to it, chmod go-w {path}",
        )
