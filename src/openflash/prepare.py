"""Preparing an endpoint: from its dependency sets to an environment, a layer and the runtime.

flash.lock wins where it pins the sets; otherwise uv resolves (cached for FLASH_RESOLVE_TTL) and
apt works out the system layer. Each set's progress (state, log lines, error) is kept for
dashboards and terminals. What a process prepares it holds in use, so that `flash env prune`
leaves it alone.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from openflash import _subprocess
from openflash._settings import Settings
from openflash.deps.apt import Apt
from openflash.deps.lockfile import LockEntry, LockFile
from openflash.deps.resolve import Lock, resolve
from openflash.deps.system import (
    SystemLayer,
    SystemLock,
    build_layer,
    distribution_release,
    resolve_system,
    system_layer,
)
from openflash.envs.bundle import worker_runtime
from openflash.envs.environment import Environment, build_environment, environment_key
from openflash.envs.store import Store

__all__ = ["BuildStatus", "DependencyKey", "Prepared", "Preparer"]


@dataclass(frozen=True, slots=True)
class DependencyKey:
    """An endpoint's dependency sets and the flash.lock that may pin them.

    ``python`` holds PEP 508 requirement strings and ``system`` Debian package names, both as
    validated at decoration (deps/specs.py); ``lockfile`` is the project's flash.lock, or None.
    Endpoints with equal keys share one preparation, and so one environment and layer.
    """

    python: tuple[str, ...]
    system: tuple[str, ...]
    lockfile: Path | None = None


@dataclass
class BuildStatus:
    """How the preparation of one dependency set goes, for dashboards and terminals."""

    state: str = "pending"  # resolving, building, ready, failed
    error: str | None = None
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=300))
    started: float = 0.0
    finished: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "error": self.error,
            "log": list(self.log),
            "started": self.started,
            "finished": self.finished,
        }


@dataclass(frozen=True)
class Prepared:
    """What workers of a dependency set need. Built here for local workers; for workers on
    other machines (Ray) only resolved here, and built there from ``lock`` and ``system_lock``."""

    lock: Lock
    env_key: str
    environment: Environment | None = None
    layer: SystemLayer = field(default_factory=SystemLayer)
    runtime_path: Path | None = None
    system_lock: SystemLock | None = None


class Preparer:
    """Builds what dependency sets need, in the calling thread."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.apt = Apt(settings.apt_root, settings.system_base, settings.resolve_ttl)
        self._status: dict[DependencyKey, BuildStatus] = {}
        self._holds: list[IO[bytes]] = []
        self._lock = threading.Lock()

    def status(self, key: DependencyKey) -> BuildStatus:
        return self._status.get(key) or BuildStatus()

    def release(self) -> None:
        """Stop holding what was prepared (the process is done with it)."""
        with self._lock:
            holds, self._holds = self._holds, []
        for handle in holds:
            handle.close()

    def build(self, dependencies: DependencyKey, *, local: bool = True) -> Prepared:
        """Resolve ``dependencies`` (or take them from flash.lock) and, if ``local``, build."""
        python, system, lockfile = dependencies.python, dependencies.system, dependencies.lockfile
        s = self.settings
        status = self._status[dependencies] = BuildStatus("resolving", started=time.time())
        if s.prebuilt_env is not None:  # an image made by `flash build`: all is installed
            status.state, status.finished = "ready", time.time()
            return Prepared(
                Lock(python, "", time.time()),
                "prebuilt",
                Environment("prebuilt", s.prebuilt_env),
                runtime_path=worker_runtime(self.store),
            )
        try:
            with _subprocess.reporting(status.log.append):
                prepared = self._prepare(python, system, lockfile, status, local)
        except BaseException as e:
            status.state, status.error, status.finished = "failed", str(e), time.time()
            raise
        status.state, status.finished = "ready", time.time()
        return prepared

    def _prepare(
        self,
        python: tuple[str, ...],
        system: tuple[str, ...],
        lockfile: Path | None,
        status: BuildStatus,
        local: bool,
    ) -> Prepared:
        s = self.settings
        entry = self._locked(lockfile, python, system)
        if system:
            _subprocess.report(f"system dependencies: {' '.join(system)}")
        # System packages first: an unknown apt package fails before anything is built.
        if local:
            layer, system_lock = self._system_layer(system, entry), None
        else:
            layer, system_lock = SystemLayer(), self._system_lock(system, entry)
        if entry is not None:
            _subprocess.report(f"installing the versions locked in {lockfile}")
            lock = Lock(python, entry.lock_text(), time.time())
        else:
            if python:
                _subprocess.report(f"resolving with uv: {' '.join(python)}")
            lock = resolve(python, store=self.store, uv_cache=s.uv_cache_dir, ttl=s.resolve_ttl)
        if not local:
            return Prepared(lock, environment_key(lock.text), system_lock=system_lock)
        status.state = "building"
        environment = build_environment(self.store, lock.text, uv_cache=s.uv_cache_dir)
        # In use while this process runs: `flash env prune` leaves them alone.
        with self._lock:
            self._holds.append(self.store.hold("envs", environment.key))
            if layer.key:
                self._holds.append(self.store.hold("layers", layer.key))
        return Prepared(lock, environment.key, environment, layer, worker_runtime(self.store))

    def _system_lock(self, names: tuple[str, ...], entry: LockEntry | None) -> SystemLock | None:
        """The closure to build a layer from elsewhere (resolved here, built on the nodes)."""
        if not names or self.settings.system_deps_mode != "layer":
            return None
        if entry is not None:
            return SystemLock(
                names, tuple(entry.system_packages), distribution_release(), time.time()
            )
        return resolve_system(names, store=self.store, apt=self.apt, ttl=self.settings.resolve_ttl)

    def _system_layer(self, names: tuple[str, ...], entry: LockEntry | None) -> SystemLayer:
        if not names or self.settings.system_deps_mode == "none":
            return SystemLayer()
        if self.settings.system_deps_mode == "host":
            with self.apt.locked():
                self.apt.install_on_host(names)
            return SystemLayer()
        if entry is not None:
            return build_layer(self.store, self._system_lock(names, entry), self.apt)  # type: ignore[arg-type]
        return system_layer(names, store=self.store, apt=self.apt, ttl=self.settings.resolve_ttl)

    def _locked(
        self, path: Path | None, python: tuple[str, ...], system: tuple[str, ...]
    ) -> LockEntry | None:
        """The flash.lock entry pinning these sets, if the project has one."""
        if path is None:
            return None
        return LockFile.read(path).find(python, system)
