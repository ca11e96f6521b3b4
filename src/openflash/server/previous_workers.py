"""The previous server's workers: certainly dead before its jobs run again.

A worker dies with the server that owns it (workers/lifeline.py), within milliseconds. This is
the check that does not rely on the worker doing so (a worker stopped with SIGSTOP cannot act on
its own): ``flash run`` notes every worker it starts in ``.flash/workers.pids`` (0600, in the
0700 ``.flash/``: a line of pid and the process's start time, so that a pid reused by another
process since is never touched), and the next ``flash run`` on the project, before it resumes
the jobs the previous one left, SIGKILLs each noted worker still running, with its process group
and every descendant, and waits until they are gone (``GONE_WITHIN_S``; past it, a warning names
those left). Then the file starts afresh.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from openflash.server.journal_files import private_file, private_folder
from openflash.workers.lifeline import descendants

__all__ = ["GONE_WITHIN_S", "WorkerNotes", "start_time"]

NAME = "workers.pids"
#: How long the next server waits for the previous server's workers to be gone.
GONE_WITHIN_S = 10.0


def start_time(pid: int) -> int | None:
    """``pid``'s start time (clock ticks after boot, /proc's field 22); None when it is gone or
    a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else int(fields[19])


class WorkerNotes:
    """``.flash/workers.pids`` of one project."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / NAME
        private_folder(folder)

    def started(self, pid: int) -> None:
        """Note worker ``pid`` (a ``worker_started`` event)."""
        began = start_time(pid)
        if began is None:
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(OSError):  # a note that cannot be written: the lifeline holds
            fd = os.open(self.path, flags, 0o600)
            try:
                os.write(fd, f"{pid} {began}\n".encode())
            finally:
                os.close(fd)

    def end_previous(self) -> tuple[list[int], list[int]]:
        """SIGKILL the noted workers still running (their groups and descendants), wait until
        they are gone, and start the notes afresh: ``(killed, still running)``."""
        private_file(self.path, create=False)  # this user's, 0600, never a symlink
        try:
            with open(self.path, "rb", opener=_no_follow) as f:
                lines = f.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        killed: list[int] = []
        for line in lines:
            pid, _, began = line.partition(" ")
            if not (pid.isdigit() and began.isdigit()):
                continue
            if start_time(int(pid)) != int(began):
                continue  # gone, or its pid is another process's now
            _kill(int(pid))
            killed.append(int(pid))
        deadline = time.monotonic() + GONE_WITHIN_S
        while (left := [p for p in killed if start_time(p) is not None]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.02)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return killed, left


def _kill(pid: int) -> None:
    targets = descendants(pid)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGSTOP)  # it starts nothing more meanwhile
    for below in descendants(pid) + targets:
        with contextlib.suppress(OSError):
            os.kill(below, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)  # a worker leads its group
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
