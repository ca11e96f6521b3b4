"""The unpacked-deb store: real apt, real dpkg-deb; each .deb unpacked once, layers linked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openflash.deps.apt import Apt
from openflash.deps.deb_store import KIND
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
    assert len(list((store.root / KIND).iterdir())) == len(first_lock.packages)
    second = build_layer(store, second_lock, apt)
    # one store entry per .deb: libzbar0's closure was not unpacked a second time
    names = {p.name for p in second_lock.packages} | {p.name for p in first_lock.packages}
    assert len(list((store.root / KIND).iterdir())) == len(names)
    assert first.path is not None and second.path is not None
    a, b = _files(first.path), _files(second.path)
    shared = [rel for rel in a if rel in b and "libzbar" in rel]
    assert shared, sorted(a)
    for rel in shared:
        assert (a[rel].st_dev, a[rel].st_ino) == (b[rel].st_dev, b[rel].st_ino), rel
        assert a[rel].st_nlink >= 3  # the store's copy and both layers'
    data = [rel for rel in b if rel.endswith("eng.traineddata")]
    assert data and not any(rel.endswith("eng.traineddata") for rel in a)
