"""Whom the store trusts (envs/trust.py): its owner's files only, never through a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from openflash.envs import trust
from openflash.errors import StorePermissionError


def test_a_new_root_is_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        trust.ensure_root(tmp_path / "a" / "store")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "store").st_mode) == 0o700


def test_files_are_read_only_when_this_user_alone_can_write_them(tmp_path: Path) -> None:
    root = tmp_path / "store"
    trust.ensure_root(root)
    (root / "resolutions").mkdir()
    good = root / "resolutions" / "x.json"
    good.write_text("{}")
    good.chmod(0o644)
    assert trust.read_text(good, root) == "{}"

    good.chmod(0o664)
    with pytest.raises(StorePermissionError) as info:
        trust.read_text(good, root)
    assert f"{good} is writable by other users (mode 0664)" in str(info.value)
    assert f"chmod go-w {good}" in info.value.hint

    link = root / "resolutions" / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text("{}")
    with pytest.raises(StorePermissionError, match="is a symbolic link"):
        trust.read_text(link, root)
    with pytest.raises(FileNotFoundError):
        trust.read_text(root / "resolutions" / "missing.json", root)


def test_a_folder_others_can_write_is_refused_at_its_level(tmp_path: Path) -> None:
    root = tmp_path / "store"
    trust.ensure_root(root)
    shared = root / "bytecode"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "blob.pyc").write_bytes(b"x")
    with pytest.raises(StorePermissionError) as info:
        trust.check_entry(shared / "blob.pyc", root)
    assert f"{shared} is writable by other users (mode 0777)" in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_another_users_file_is_refused_naming_the_owner(tmp_path: Path) -> None:
    root = tmp_path / "store"
    trust.ensure_root(root)
    planted = root / "store.log"
    planted.write_text("")
    os.chown(planted, 54321, 54321)
    with pytest.raises(StorePermissionError) as info:
        trust.open_trusted(planted, root, os.O_WRONLY | os.O_APPEND)
    assert f"{planted} belongs to uid 54321" in str(info.value)
    assert "FLASH_HOME of its own" in info.value.hint


def test_a_store_in_a_folder_anyone_can_rename_it_out_of_is_refused(tmp_path: Path) -> None:
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)  # world-writable without the sticky bit
    with pytest.raises(StorePermissionError) as info:
        trust.ensure_root(open_folder / "store")
    assert f"lies in {open_folder}" in str(info.value)
    assert "under your home directory" in info.value.hint


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_uv_cache_in_the_store_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openflash.prepare.preparer import Preparer

    home = tmp_path / "store"
    monkeypatch.setenv("FLASH_HOME", str(home))
    monkeypatch.delenv("FLASH_UV_CACHE_DIR", raising=False)
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)
    trust.ensure_root(home)
    (home / "uv-cache").mkdir()
    os.chown(home / "uv-cache", 54321, 54321)
    with pytest.raises(StorePermissionError, match=f"{home / 'uv-cache'} belongs to uid 54321"):
        Preparer()
    os.chown(home / "uv-cache", 0, 0)
    assert Preparer().store.root == home  # given back: used
