"""Source builds that failed, remembered so that each runs once: the second call fails fast.

A pin with no wheel is built from source by uv (``uv pip sync``); a failing build can take
minutes and fails again the same way. When it fails, the pin (``name==version``, or
``name @ url``), the install options, the Python and the platform key a record in the store
(``FLASH_HOME/build-failures/<key>.json``) holding uv's explanation and the build's last lines.
An environment whose lock holds such a pin then fails at once with the remembered reason.

The record is forgotten when anything that keys it changes (another version, other options such
as ``extra_build_dependencies``, a local sdist's new contents: its digest is part of the key),
or on a refresh: ``flash check --refresh``, ``flash lock --refresh`` or FLASH_RETRY_BUILDS=1,
which try every build again.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from openflash.envs.local_sources import local_sources_digest
from openflash.envs.store import Store, content_key, write_atomic
from openflash.envs.uv import backend_failed
from openflash.envs.uv_options import NO_OPTIONS, UvOptions

__all__ = ["BuildFailure", "failed_build", "forget_failures", "recall", "remember"]

FOLDER = "build-failures"
_FAILED = re.compile(r"Failed to build `([^`]+)`")


@dataclass(frozen=True, slots=True)
class BuildFailure:
    """A remembered failed build: the ``requirement`` as uv names it, when, and why."""

    requirement: str
    failed_at: float
    reason: str


def failed_build(stderr: str, lock_text: str) -> str | None:
    """The pin of ``lock_text`` whose source build failed according to ``stderr`` (uv's: it
    names it as ``failpkg==1.0`` or ``failpkg @ file:///...``), or None when no build failed."""
    found = _FAILED.search(stderr)
    if not found or not backend_failed(stderr):
        return None
    name = _name(found[1])
    for requirement in _pins(lock_text):
        if _name(requirement) == name:
            return requirement
    return found[1]


def remember(
    store: Store,
    requirement: str,
    reason: str,
    *,
    options: UvOptions = NO_OPTIONS,
    platform: tuple[str, str] = ("", ""),
) -> BuildFailure:
    """Record that ``requirement`` failed to build here, for ``reason`` (uv's summary)."""
    failure = BuildFailure(requirement, time.time(), reason)
    path = _path(store, requirement, options, platform)
    write_atomic(
        path,
        json.dumps(
            {"requirement": requirement, "failed_at": failure.failed_at, "reason": reason}, indent=1
        ),
    )
    return failure


def recall(
    store: Store,
    lock_text: str,
    *,
    options: UvOptions = NO_OPTIONS,
    platform: tuple[str, str] = ("", ""),
) -> BuildFailure | None:
    """The remembered failure of a pin in ``lock_text`` (its first, in lock order), or None."""
    folder = store.root / FOLDER
    if not folder.is_dir():
        return None
    for requirement in _pins(lock_text):
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
            data = json.loads(store.read_text(_path(store, requirement, options, platform)))
            return BuildFailure(requirement, float(data["failed_at"]), str(data["reason"]))
    return None


def forget_failures(store: Store) -> int:
    """Forget every remembered failure (a refresh); returns how many there were."""
    folder = store.root / FOLDER
    count = len(list(folder.glob("*.json"))) if folder.is_dir() else 0
    shutil.rmtree(folder, ignore_errors=True)
    return count


def _pins(lock_text: str) -> list[str]:
    """The requirement lines of a lock, without hashes (flash.lock's)."""
    pins = (
        " ".join(t for t in line.split() if not t.startswith("--hash="))
        for line in lock_text.splitlines()
    )
    return [pin for pin in pins if pin]


def _name(requirement: str) -> str:
    return canonicalize_name(re.split(r"[\s=<>!~@;\[]", requirement.strip(), maxsplit=1)[0])


def _path(store: Store, requirement: str, options: UvOptions, platform: tuple[str, str]) -> Path:
    local = local_sources_digest([requirement])
    key = content_key("build-failure", requirement, local, options.digest(), *platform)
    return store.root / FOLDER / f"{key}.json"
