"""Per-function environments cut from the project's own lock: constraints from its ``uv.lock``.

Where a decorated file's project has a ``uv.lock`` (the nearest at or above its folder, beside a
``pyproject.toml``: a workspace's lock sits at its root), every endpoint's ``dependencies``
resolve with the versions that lock chose as constraints (uv's ``--constraint``): a package the
lock and the endpoint's resolution both hold gets the locked version, so every function agrees
with the project; packages the lock does not hold resolve freely. Only packages the lock takes
from an index, at one version, become constraints (not the project itself, nor git, path or
URL sources, nor a package locked at several versions for different markers).

A declared spec the locked version does not satisfy (``numpy>=2.2`` with numpy 2.1.3 locked)
can never resolve: ``lock_conflicts`` names each, for the error and for ``flash check``.
The lock is parsed with tomllib, once per (path, modification time).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from openflash.errors import DependencyConflictError, DependencyError

__all__ = [
    "ProjectLock",
    "conflict_error",
    "constraints_for",
    "find_uv_lock",
    "lock_conflicts",
    "project_lock",
]

LOCK_NAME = "uv.lock"


@dataclass(frozen=True, slots=True)
class ProjectLock:
    """A project's ``uv.lock``: its ``path`` and the ``name==version`` constraints it gives
    (canonical names, sorted)."""

    path: Path
    constraints: tuple[str, ...]

    @property
    def versions(self) -> dict[str, str]:
        """Package (canonical name) to its locked version."""
        return {name: version for name, _, version in (c.partition("==") for c in self.constraints)}


def find_uv_lock(start: Path | None) -> Path | None:
    """The nearest ``uv.lock`` beside a ``pyproject.toml``, at or above ``start``."""
    if start is None:
        return None
    for folder in [start, *start.parents]:
        candidate = folder / LOCK_NAME
        if candidate.is_file() and (folder / "pyproject.toml").is_file():
            return candidate
    return None


def project_lock(start: Path | None) -> ProjectLock | None:
    """The project lock of the folder ``start`` (a decorated file's), or None without one.
    Raises DependencyError naming the file when it is not a uv lock."""
    path = find_uv_lock(start)
    if path is None:
        return None
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    return _read(path, stamp)


@functools.lru_cache(maxsize=16)
def _read(path: Path, stamp: int) -> ProjectLock:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DependencyError(
            f"{path} cannot be read as a uv lock: {e}",
            hint="run `uv lock` in the project to write it again, or remove it",
        ) from None
    found: dict[str, set[str]] = {}
    for package in data.get("package", []):
        source = package.get("source") or {}
        if not isinstance(package, dict) or "registry" not in source:
            continue  # the project, workspace members, git, path and URL sources
        name, version = package.get("name"), package.get("version")
        if isinstance(name, str) and isinstance(version, str):
            found.setdefault(canonicalize_name(name), set()).add(version)
    pins = sorted(f"{name}=={next(iter(v))}" for name, v in found.items() if len(v) == 1)
    return ProjectLock(path, tuple(pins))


def lock_conflicts(specs: tuple[str, ...], lock: ProjectLock) -> list[str]:
    """A sentence per spec of ``specs`` that the version ``lock`` holds does not satisfy
    (``'numpy>=2.2' cannot be met: uv.lock locks numpy 2.1.3``)."""
    versions = lock.versions
    found = []
    for spec in specs:
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            continue
        name = canonicalize_name(req.name)
        locked = versions.get(name)
        if locked is None or req.url is not None:
            continue
        try:
            ok = req.specifier.contains(Version(locked), prereleases=True)
        except InvalidVersion:
            continue
        if not ok:
            found.append(f"{spec!r} cannot be met: {lock.path} locks {name} {locked}")
    return found


def conflict_error(specs: tuple[str, ...], lock: ProjectLock) -> DependencyConflictError | None:
    """The error for the specs of ``specs`` that ``lock`` cannot satisfy, or None."""
    conflicts = lock_conflicts(specs, lock)
    if not conflicts:
        return None
    return DependencyConflictError(
        "these dependencies disagree with the project's lock:\n" + "\n".join(conflicts),
        hint="allow the locked version in the spec, or move the project's lock to a version "
        "the spec allows (`uv lock --upgrade-package NAME`, or `uv add 'SPEC'`)",
    )


def constraints_for(specs: tuple[str, ...], lock: ProjectLock | None) -> tuple[str, ...]:
    """``lock``'s versions as constraints for resolving ``specs`` (none without a lock).
    Raises DependencyConflictError for a spec they cannot satisfy (``conflict_error``)."""
    if lock is None or not specs:
        return ()
    error = conflict_error(specs, lock)
    if error is not None:
        raise error
    return lock.constraints
