"""The identity of an endpoint's dependencies: what preparations, flash.lock entries and
``flash check``'s sets are keyed by."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openflash.deps.project_lock import ProjectLock
from openflash.envs.uv_options import NO_OPTIONS, UvOptions

__all__ = ["DependencyKey"]


@dataclass(frozen=True, slots=True)
class DependencyKey:
    """An endpoint's dependency sets and the flash.lock that may pin them.

    ``python`` holds PEP 508 requirement strings and ``system`` Debian package names, both as
    validated at decoration (deps/specs.py); ``lockfile`` is the project's flash.lock, or None;
    ``local`` is the digest of the contents of the local wheels, sdists and project folders
    ``python`` names (envs/local_sources.py; empty when none), so that a rebuilt wheel or an
    edited project is a new key, hence a new preparation. ``options`` are the endpoint's install
    options (index URLs, find-links, torch backend, build flags: envs/uv_options.py), merged
    over the project's ``[tool.openflash]`` defaults: different options, different environments.
    ``base`` names the requirements of ``python`` that came from the GPU base set
    (deps/gpu_base.py: a GPU endpoint's code imports them undeclared), added by
    ``Preparer.dependency_key``. ``project_lock`` is the project's ``uv.lock``, whose versions
    constrain the resolution (deps/project_lock.py), or None. Endpoints with equal keys share
    one preparation, and so one environment and layer.
    """

    python: tuple[str, ...]
    system: tuple[str, ...]
    lockfile: Path | None = None
    local: str = ""
    options: UvOptions = NO_OPTIONS
    base: tuple[str, ...] = ()
    project_lock: ProjectLock | None = None
