"""Which files of some folders processes open, as the kernel tells it (inotify, IN_OPEN).

The background compiler (envs/bytecode_later.py) compiles the files a first worker is expected
to import from the last to the first, while that worker imports them from the first, compiling
in memory each one that has no bytecode yet. A file the worker opened before the compiler got to
it is compiled: compiling it again takes the compiler's CPU from the files the worker has not
reached (measured: 164-256 of the worker's 424 files compiled twice before its first result,
bench/RESULTS.md). The compiler watches the environment's folders from its start, before the
worker imports anything, and leaves out what was opened by others: its own reads (the guess of
envs/import_order.py reads each file once) are counted and taken off.

Linux only; where inotify is missing or refused (a limit on watches), nothing is reported and
every file is compiled, as before.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

__all__ = ["OpenedFiles"]

_IN_OPEN = 0x20
_EVENT = struct.Struct("iIII")


class OpenedFiles:
    """A watch on ``folders`` (not their subfolders); :meth:`counts` says how many times each
    file in them was opened since the watch began. Closed with :meth:`close` (or ``with``)."""

    def __init__(self, folders: Iterable[Path]) -> None:
        self._folders: dict[int, Path] = {}
        self._counts: Counter[Path] = Counter()
        self._fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            for folder in folders if self._fd >= 0 else ():
                number = libc.inotify_add_watch(self._fd, os.fsencode(folder), _IN_OPEN)
                if number >= 0:
                    self._folders[number] = folder
        except (OSError, AttributeError):  # no inotify here
            self.close()

    def counts(self) -> Counter[Path]:
        """Each file of the folders opened since the watch began: how many times."""
        while self._fd >= 0:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            at = 0
            while at + _EVENT.size <= len(data):
                number, _, _, size = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size : at + _EVENT.size + size].rstrip(b"\0")
                if name and number in self._folders:
                    self._counts[self._folders[number] / os.fsdecode(name)] += 1
                at += _EVENT.size + size
        return self._counts

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OpenedFiles:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
