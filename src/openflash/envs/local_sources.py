"""Local sources by content: what ``name @ file://...`` requirements hold, as one digest.

A local wheel, an sdist or a project folder is named in a lock by its path, which does not
change when the wheel is rebuilt or the project edited. Environments, resolutions and the
runtime's preparations are keyed by this digest too (the sha256 of each file's bytes, and for a
folder of every file under it but version-control, cache and build folders), so that new
contents give a new environment, whatever the file's name or modification time. Digests of
files are remembered per (path, size, mtime, ctime), so asking again at every call costs a
``stat`` per file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

__all__ = ["local_paths", "local_sources_digest"]

#: Folders under a local project that are not its source (PEP 517 builds write some of them).
_SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        "build",
        "dist",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "node_modules",
    }
)
_memo: dict[tuple[str, int, int, int], str] = {}
_memo_lock = threading.Lock()


def local_paths(requirements: Iterable[str]) -> list[tuple[str, Path]]:
    """``(name, path)`` of every ``name @ file://...`` requirement (a wheel, sdist or folder)."""
    found = []
    for line in requirements:
        name, sep, url = line.partition(" @ ")
        url = url.split(";", 1)[0].split()[0] if url.strip() else ""
        if sep and url.startswith("file:"):
            found.append((name.split("[", 1)[0].strip(), Path(url2pathname(urlparse(url).path))))
    return found


def local_sources_digest(requirements: Iterable[str]) -> str:
    """The sha256 of the contents of every local source the requirements name, or ``""`` when
    they name none. A missing path counts as missing (its requirement fails later, clearly)."""
    paths = sorted({str(path) for _, path in local_paths(requirements)})
    if not paths:
        return ""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path}\0{_digest(Path(path))}\n".encode())
    return digest.hexdigest()


def _digest(path: Path) -> str:
    if path.is_file():
        return _file_digest(path)
    if not path.is_dir():
        return "missing"
    tree = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIPPED_DIRS and not d.endswith(".egg-info")
        )
        for name in sorted(filenames):
            file = Path(dirpath, name)
            if file.is_file() and not name.endswith((".pyc", ".pyo")):
                relative = file.relative_to(path).as_posix()
                tree.update(f"{relative}\0{_file_digest(file)}\n".encode())
    return tree.hexdigest()


def _file_digest(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "missing"
    signature = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _memo_lock:
        known = _memo.get(signature)
    if known is not None:
        return known
    sha = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    except OSError:
        return "missing"
    with _memo_lock:
        _memo[signature] = sha.hexdigest()
    return sha.hexdigest()
