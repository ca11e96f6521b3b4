"""The unpacked-deb store: each .deb is extracted once, into ``FLASH_HOME/debs/<sha256>/tree``
(content-addressed: the key is the hash of the .deb's bytes), with its control files (``postinst``,
``triggers``, ...) beside it in ``control/``: one ``dpkg-deb -R`` per package.
A layer is assembled from these by hard links (``cp -al``, one process for the whole closure),
so two layers sharing packages share their files on disk, and a layer of ffmpeg plus one small
package costs only what that package adds. Unpacking runs in parallel, the largest .debs first
(xz decompression is the cost, so the longest jobs must not come last), each .deb at most once
across threads and processes (``Store.build_once``: nothing partial is ever used). A .deb's hash
is remembered under ``FLASH_HOME/debs/.by-file/`` by its name, size and modification time, so
the .debs of apt's cache are read once, not at every layer; a layer's build passes the SHA256s
apt's check against the index has just read (``Apt.download_verified``), so none is read twice
for one layer (that check itself reads every .deb of every layer it builds).

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
from openflash.envs.store import Store, write_atomic
from openflash.errors import SystemDependencyError

__all__ = ["UnpackedDeb", "assemble", "unpack_all"]

KIND = "debs"


@dataclass(frozen=True)
class UnpackedDeb:
    """One .deb in the store: its files and its postinst script ("" where it has none)."""

    tree: Path
    postinst: str


#: Where a .deb's hash is remembered (by name, size and mtime), beside the entries.
_BY_FILE = ".by-file"


def _digest(store: Store, deb: Path) -> str:
    """The sha256 of ``deb``'s bytes, remembered while its size and mtime stay the same."""
    st = deb.stat()
    memo = store.path(KIND, _BY_FILE) / f"{deb.name}.{st.st_size}.{st.st_mtime_ns}"
    try:
        known = store.read_text(memo)
        if len(known) == 64:
            return known
    except FileNotFoundError:
        pass
    h = hashlib.sha256()
    with deb.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    write_atomic(memo, digest)
    return digest


def unpack(store: Store, deb: Path, sha256: str | None = None) -> UnpackedDeb:
    """``deb``'s files in the store, extracted by ``dpkg-deb -R`` if not there yet; ``sha256``
    (hex), where the caller has just read it (apt's check against the index), spares reading
    the .deb again to find its entry."""

    def build(tmp: Path) -> dict[str, object]:
        _subprocess.run(
            ["dpkg-deb", "-R", str(deb), str(tmp / "tree")],
            timeout=600,
            error=SystemDependencyError,
            hint=f"{deb.name} could not be unpacked; delete it from apt's cache to download it "
            "again",
        )
        (tmp / "tree" / "DEBIAN").rename(tmp / "control")
        return {"deb": deb.name}

    final = store.build_once(KIND, sha256 or _digest(store, deb), build)
    return UnpackedDeb(final / "tree", _postinst(final))


def _postinst(entry: Path) -> str:
    for script in (entry / "control" / "postinst", entry / "postinst"):  # then: format 1
        if script.is_file():
            return script.read_text(errors="replace")
    return ""


def unpack_all(
    store: Store, debs: list[Path], sha256s: list[str] | None = None
) -> list[UnpackedDeb]:
    """Every .deb unpacked (in parallel, the largest first), in the order given; ``sha256s``
    as ``unpack`` takes them, one per .deb, where known."""
    known = dict(zip(debs, sha256s, strict=True)) if sha256s is not None else {}
    largest_first = sorted(debs, key=lambda deb: -deb.stat().st_size)
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 1) as pool:
        unpacked = pool.map(lambda deb: unpack(store, deb, known.get(deb)), largest_first)
        done = dict(zip(largest_first, unpacked, strict=True))
    return [done[deb] for deb in debs]


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
