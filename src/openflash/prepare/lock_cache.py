"""flash.lock files read once: parsed by path, read again only when the file changes.

A preparation asks for the project's flash.lock twice or more (its entry, whether it is stale);
so do ``flash check`` and ``flash build`` for every set. The parsed ``LockFile`` is kept by path
with the file's modification time (ns) and size; a changed file is parsed again.
"""

from __future__ import annotations

import threading
from pathlib import Path

from openflash.deps.lockfile import LockFile

__all__ = ["LockFileCache"]


class LockFileCache:
    """Parsed flash.lock files, by path; thread-safe. The ``LockFile`` handed out is shared:
    callers read it, never change it."""

    def __init__(self) -> None:
        self._parsed: dict[Path, tuple[tuple[int, int, int], LockFile]] = {}
        self._lock = threading.Lock()

    def read(self, path: Path) -> LockFile:
        """The parsed file at ``path``. Raises DependencyError (with a hint) when it cannot be
        read or parsed."""
        try:
            stat = path.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a rewrite is a new inode
        except OSError:
            return LockFile.read(path)  # raises the usual error, with its hint
        with self._lock:
            cached = self._parsed.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        parsed = LockFile.read(path)
        with self._lock:
            self._parsed[path] = (stamp, parsed)
        return parsed
