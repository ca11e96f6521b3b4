"""The unpacked-deb store: real apt, real dpkg-deb; each .deb unpacked once, layers linked."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from openflash.deps import deb_store
from openflash.deps.apt import Apt
from openflash.deps.deb_store import KIND, unpack
from openflash.deps.system import build_layer, resolve_system
from openflash.envs.store import Store


@pytest.fixture
def apt(apt_dir: Path) -> Apt:
    return Apt(apt_dir, Path("/var/lib/dpkg/status"), index_ttl=86400)


def _files(root: Path) -> dict[str, os.stat_result]:
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if not path.is_symlink():
                found[str(path.relative_to(root))] = path.stat()
    return found


def test_overlapping_layers_share_the_files_of_their_common_packages(
    tmp_path: Path, apt: Apt
) -> None:
    store = Store(tmp_path / "home")
    first_lock = resolve_system(("libzbar0",), store=store, apt=apt, ttl=60)
    second_lock = resolve_system(("libzbar0", "tesseract-ocr-eng"), store=store, apt=apt, ttl=60)
    first = build_layer(store, first_lock, apt)
    assert len(store.entries(KIND)) == len(first_lock.packages)
    second = build_layer(store, second_lock, apt)
    # one store entry per .deb: libzbar0's closure was not unpacked a second time
    names = {p.name for p in second_lock.packages} | {p.name for p in first_lock.packages}
    assert len(store.entries(KIND)) == len(names)
    assert first.path is not None and second.path is not None
    a, b = _files(first.path), _files(second.path)
    shared = [rel for rel in a if rel in b and "libzbar" in rel]
    assert shared, sorted(a)
    for rel in shared:
        assert (a[rel].st_dev, a[rel].st_ino) == (b[rel].st_dev, b[rel].st_ino), rel
        assert a[rel].st_nlink >= 3  # the store's copy and both layers'
    data = [rel for rel in b if rel.endswith("eng.traineddata")]
    assert data and not any(rel.endswith("eng.traineddata") for rel in a)


def _tiny_deb(where: Path, version: str = "1.0") -> Path:
    """A .deb made here with dpkg-deb -b: one file and a postinst."""
    root = where / f"pkg-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: openflash-tiny\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: openflash <test@example.invalid>\nDescription: test package\n"
    )
    (root / "DEBIAN" / "postinst").write_text("#!/bin/sh\necho configured\n")
    (root / "DEBIAN" / "postinst").chmod(0o755)
    (root / "usr/share/tiny").mkdir(parents=True)
    (root / "usr/share/tiny/data.txt").write_text(f"tiny {version}\n")
    deb = where / f"openflash-tiny_{version}_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_a_deb_is_hashed_once_while_unchanged_and_its_control_files_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "home")
    deb = _tiny_deb(tmp_path)
    first = unpack(store, deb)
    assert (first.tree / "usr/share/tiny/data.txt").read_text() == "tiny 1.0\n"
    assert "echo configured" in first.postinst
    assert not (first.tree / "DEBIAN").exists()
    assert (first.tree.parent / "control" / "control").is_file()

    def no_hashing(*args: object) -> None:
        raise AssertionError("the .deb was hashed again")

    monkeypatch.setattr(deb_store.hashlib, "sha256", no_hashing)
    assert unpack(store, deb).tree == first.tree  # unchanged: its remembered hash
    monkeypatch.undo()
    os.utime(deb, ns=(1, 1))  # touched (apt downloaded it again): hashed again, same entry
    seen = []
    real = hashlib.sha256
    monkeypatch.setattr(deb_store.hashlib, "sha256", lambda: seen.append(1) or real())
    assert unpack(store, deb).tree == first.tree
    assert seen == [1]
    assert len(store.entries(KIND)) == 1


def test_a_first_layer_reads_each_deb_once_for_its_hash(
    tmp_path: Path, apt: Apt, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apt's check against the index has just read each .deb's SHA256: the store takes it as
    the entry's key instead of reading the .deb again (in the first layer's critical path)."""
    store = Store(tmp_path / "home")
    lock = resolve_system(("tree",), store=store, apt=apt, ttl=60)

    def no_hashing(*args: object) -> None:
        raise AssertionError("the store hashed a .deb apt had just checked")

    monkeypatch.setattr(deb_store, "_digest", no_hashing)  # the store's own reading
    layer = build_layer(store, lock, apt)
    monkeypatch.undo()
    assert layer.path is not None and (layer.path / "usr/bin/tree").is_file()
    with apt.locked():
        debs = apt.download(lock.packages)
    keys = {entry.path.name for entry in store.entries(KIND)}
    assert keys == {hashlib.sha256(deb.read_bytes()).hexdigest() for deb in debs}
