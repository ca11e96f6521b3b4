"""Named volumes on this machine: ``NetworkVolume(name=...)`` is the folder
``FLASH_VOLUMES/<name>`` (default ``FLASH_HOME/volumes/<name>``), created on first use, shared by
every endpoint naming it, and never pruned by ``flash env prune`` (``flash env ls`` lists them).
A volume with only an ``id`` (one on Runpod's cloud) has no local folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from openflash._settings import Settings
from openflash.config.resources import ServerlessResource

__all__ = ["Volume", "list_volumes", "volume_folder"]

logger = logging.getLogger("openflash")


@dataclass(frozen=True)
class Volume:
    """One named volume's folder and what it holds (for ``flash env ls``)."""

    name: str
    path: Path
    bytes: int
    files: int


def volume_folder(settings: Settings, resource: ServerlessResource) -> Path | None:
    """The folder of ``resource``'s volume, or None where it has none (or only a cloud id)."""
    volume = resource.networkVolume
    if volume is None:
        return None
    if volume.name is None:
        logger.debug("%s: a network volume without a name has no local folder", resource.name)
        return None
    return settings.volumes_root / volume.name


def list_volumes(settings: Settings) -> list[Volume]:
    """The volumes in ``FLASH_VOLUMES``, by name, with their size (files counted once each)."""
    root = settings.volumes_root
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        size = files = 0
        seen: set[tuple[int, int]] = set()
        for path in folder.rglob("*"):
            st = path.lstat()
            if path.is_file() and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_size
                files += 1
        found.append(Volume(folder.name, folder, size, files))
    return found
