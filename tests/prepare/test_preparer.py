"""The preparer's answers that need no index: flash.lock read once, its entries, check rules."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from openflash.deps.lockfile import LockedPackage, LockEntry, LockFile
from openflash.deps.project_lock import ProjectLock
from openflash.deps.resolve import Lock
from openflash.errors import DependencyConflictError
from openflash.prepare import DependencyKey, Preparer, SetCheck
from openflash.prepare.dependency_checks import issues_of
from openflash.prepare.lock_cache import LockFileCache

SIX = LockedPackage("six", "1.17.0", ("sha256:" + "0" * 64,))


def _write_lock(path: Path, *entries: LockEntry) -> Path:
    LockFile(path, "cp311", "linux", list(entries)).write()
    return path


def test_a_lockfile_is_parsed_once_until_it_changes(tmp_path: Path) -> None:
    path = _write_lock(tmp_path / "flash.lock", LockEntry(["a"], ("six",), (), [SIX]))
    cache = LockFileCache()
    first = cache.read(path)
    assert cache.read(path) is first
    _write_lock(path, LockEntry(["a", "b"], ("six==1.17.0",), (), [SIX]))
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    again = cache.read(path)
    assert again is not first and again.entries[0].dependencies == ("six==1.17.0",)


def test_the_preparer_takes_flash_locks_entry_and_sees_a_stale_one(
    tmp_path: Path, flash_home: Path
) -> None:
    locked = LockEntry(["a"], ("six",), (), [SIX])
    path = _write_lock(tmp_path / "flash.lock", locked)
    preparer = Preparer()
    key = DependencyKey(("six",), (), path)
    entry = preparer.entry_for("a", key)
    assert entry.lock_text() == locked.lock_text()
    assert preparer.lockfile(path) is preparer.lockfile(path)
    moved = DependencyKey(("six==1.16.0",), (), path)
    assert preparer.locked_entry(moved) is None
    stale = preparer.stale_entry(moved, "a")
    assert stale is not None and stale.dependencies == ("six",)


@dataclass
class _Set:
    dependencies: tuple[str, ...]
    system_dependencies: tuple[str, ...]
    names: list[str]
    base: tuple[str, ...] = ()
    imports: dict[str, tuple[str, ...]] = field(default_factory=dict)
    project_lock: ProjectLock | None = None

    @property
    def label(self) -> str:
        return ", ".join(self.names)


def test_check_rules_order_errors_then_warnings_then_suggestions() -> None:
    sets = [
        _Set(("six==1.17.0", "attrs==23.1.0"), (), ["a"]),
        _Set(("six==1.17.0", "attrs==24.1.0"), (), ["b"]),
        _Set(("numpy",), (), ["c"]),
    ]
    results: list[SetCheck | BaseException] = [
        SetCheck(Lock((), "", 0.0), ("attrs",)),
        DependencyConflictError("no"),
        SetCheck(Lock((), "", 0.0)),
    ]
    issues = issues_of(sets, results, None)
    assert [(i.level, i.kind, i.endpoints) for i in issues] == [
        ("error", "DependencyConflictError", ["b"]),
        ("warning", "no-wheel", ["a"]),
        ("warning", "unpinned", ["c"]),
        ("suggestion", "near-duplicate", ["a", "b"]),
    ]
