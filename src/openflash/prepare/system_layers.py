"""The preparer's system layers: an endpoint's Debian packages as a layer built here, or as the
closure a machine elsewhere builds (a Ray node), per FLASH_SYSTEM_DEPS (``layer``, ``host``,
``none``); a flash.lock entry's closure wins over apt's resolution."""

from __future__ import annotations

import time

from openflash._settings import Settings
from openflash.deps.apt import Apt
from openflash.deps.lockfile import LockEntry
from openflash.deps.namespace_mode import layer_mode
from openflash.deps.system import (
    SystemLayer,
    SystemLock,
    build_layer,
    distribution_release,
    resolve_system,
    system_layer,
)
from openflash.envs.store import Store

__all__ = ["system_layer_for", "system_lock_for"]


def system_lock_for(
    names: tuple[str, ...], entry: LockEntry | None, settings: Settings, store: Store, apt: Apt
) -> SystemLock | None:
    """The closure of ``names`` for a layer built elsewhere; None without a layer to build."""
    if not names or settings.system_deps_mode != "layer":
        return None
    return _closure(names, entry, settings, store, apt)


def system_layer_for(
    names: tuple[str, ...], entry: LockEntry | None, settings: Settings, store: Store, apt: Apt
) -> SystemLayer:
    """The layer of ``names`` built in ``store`` (or, FLASH_SYSTEM_DEPS=host, installed on the
    host; none: nothing). Raises SystemDependencyError for a package apt does not know."""
    if not names or settings.system_deps_mode == "none":
        return SystemLayer()
    if settings.system_deps_mode == "host":
        with apt.locked():
            apt.install_on_host(names)
        return SystemLayer()
    real_paths = layer_mode(settings.namespaces).namespaces
    if entry is not None:
        closure = _closure(names, entry, settings, store, apt)
        return build_layer(store, closure, apt, real_paths=real_paths)
    return system_layer(
        names, store=store, apt=apt, ttl=settings.resolve_ttl, real_paths=real_paths
    )


def _closure(
    names: tuple[str, ...], entry: LockEntry | None, settings: Settings, store: Store, apt: Apt
) -> SystemLock:
    if entry is not None:
        return SystemLock(names, tuple(entry.system_packages), distribution_release(), time.time())
    return resolve_system(names, store=store, apt=apt, ttl=settings.resolve_ttl)
