"""The project folder, shipped to Ray nodes: packed here, content-hashed, unpacked once per node.

A worker imports its project's modules (``from inference import infer`` inside a function), and
a node need not have the driver's files. The driver packs the project folder (what its modules
import from) into a tar archive, skipping what is not the project's own (hidden folders,
``__pycache__``, virtual environments, ``node_modules``); the archive's name is the sha256 of
its members' names and bytes, so an unchanged project is the same archive whoever packs it.
Each node's agent unpacks it once into ``FLASH_HOME/projects/<sha256>/`` (built aside, published
by rename), and the node's workers import from there.

The archive is at most FLASH_RAY_PROJECT_LIMIT bytes (default 100M, ``0`` for no limit); past it
the call fails at once naming the largest files, before anything travels. Like Ray's own
``working_dir``, it is for code and small data: large files belong in a volume or the image.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from openflash.errors import FlashError

__all__ = ["DEFAULT_LIMIT", "PackedProject", "pack_project", "unpack_project"]

#: The default size limit of a shipped project, in bytes.
DEFAULT_LIMIT = 100 << 20
#: Folders never shipped (besides hidden ones and virtual environments).
_SKIPPED = frozenset({"__pycache__", "node_modules", "site-packages"})


@dataclass(frozen=True, slots=True)
class PackedProject:
    """A project folder as an archive: its origin (the driver's path), content hash and bytes."""

    origin: str
    sha256: str
    data: bytes


def _files(root: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in _SKIPPED
            and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
        )
        for name in sorted(files):
            path = Path(folder, name)
            if name.endswith((".pyc", ".pyo")) or not path.is_file() or path.is_symlink():
                continue
            found.append((path.relative_to(root).as_posix(), path))
    return found


def pack_project(root: Path, limit: int | None) -> PackedProject:
    """``root``'s files as a tar archive, or a FlashError when they pass ``limit`` bytes."""
    files = _files(root)
    sizes = {rel: path.stat().st_size for rel, path in files}
    total = sum(sizes.values())
    if limit and total > limit:
        largest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
        named = ", ".join(f"{rel} ({size / 1e6:.1f} MB)" for rel, size in largest)
        raise FlashError(
            f"the project folder {root} is {total / 1e6:.1f} MB, more than the "
            f"{limit / 1e6:.1f} MB shipped to Ray nodes (FLASH_RAY_PROJECT_LIMIT); its largest "
            f"files: {named}",
            hint="move large files out of the project (into a volume, or fetch them in the "
            "function), or raise FLASH_RAY_PROJECT_LIMIT (e.g. 500M; 0 for no limit)",
        )
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for rel, path in files:
            data = path.read_bytes()
            digest.update(f"{rel}\0{len(data)}\0".encode())
            digest.update(data)
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            tar.addfile(info, io.BytesIO(data))
    return PackedProject(str(root), digest.hexdigest(), buffer.getvalue())


def unpack_project(home: Path, sha256: str, data: bytes | None) -> Path | None:
    """The node's copy of the project ``sha256`` under ``home``: unpacked from ``data`` once;
    None when it is not there and no ``data`` was given."""
    target = home / "projects" / sha256
    if target.is_dir():
        return target
    if data is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=target.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(scratch, filter="data")
        try:
            scratch.rename(target)
        except OSError:  # another driver published it first: theirs is the same content
            if not target.is_dir():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target
