"""The unpacked-deb store: each .deb is extracted once, into ``FLASH_HOME/debs/<sha256>/tree``
(content-addressed: the key is the hash of the .deb's bytes), with its ``postinst`` beside it.
A layer is assembled from these by hard links (``cp -al``, one process for the whole closure),
so two layers sharing packages share their files on disk, and a layer of ffmpeg plus one small
package costs only what that package adds. Unpacking runs in parallel, each .deb at most once
across threads and processes (``Store.build_once``: nothing partial is ever used).

Files in the store are shared by every layer linking them: a layer's own files (``ld.so.cache``,
fontconfig's file, alternatives links) are always new files, never writes into linked ones.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from openflash import _subprocess
from openflash.envs.store import Store
from openflash.errors import SystemDependencyError

__all__ = ["UnpackedDeb", "assemble", "unpack_all"]

KIND = "debs"


@dataclass(frozen=True)
class UnpackedDeb:
    """One .deb in the store: its files and its postinst script ("" where it has none)."""

    tree: Path
    postinst: str


def _digest(deb: Path) -> str:
    h = hashlib.sha256()
    with deb.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def unpack(store: Store, deb: Path) -> UnpackedDeb:
    """``deb``'s files in the store, extracted by ``dpkg-deb -x`` if not there yet."""

    def build(tmp: Path) -> dict[str, object]:
        _subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(tmp / "tree")],
            timeout=600,
            error=SystemDependencyError,
            hint=f"{deb.name} could not be unpacked; delete it from apt's cache to download it "
            "again",
        )
        script = _subprocess.run(
            ["dpkg-deb", "--info", str(deb), "postinst"], timeout=60, check=False
        )
        (tmp / "postinst").write_text(script.stdout if script.ok else "")
        return {"deb": deb.name}

    final = store.build_once(KIND, _digest(deb), build)
    return UnpackedDeb(final / "tree", (final / "postinst").read_text())


def unpack_all(store: Store, debs: list[Path]) -> list[UnpackedDeb]:
    """Every .deb unpacked (in parallel), in the order given."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda deb: unpack(store, deb), debs))


def assemble(unpacked: list[UnpackedDeb], target: Path) -> None:
    """Hard-link every package's files into ``target``, later packages winning a shared path
    (as ``dpkg-deb -x`` one after the other would)."""
    if not unpacked:
        return
    target.mkdir(parents=True, exist_ok=True)
    _subprocess.run(
        ["cp", "-al", "--remove-destination", *(f"{u.tree}/." for u in unpacked), f"{target}/"],
        timeout=600,
        error=SystemDependencyError,
        hint="the layer's files could not be linked from the unpacked-deb store (it must be on "
        "FLASH_HOME's file system)",
    )
