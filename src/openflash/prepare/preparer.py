"""The one preparer: dependency sets (or a flash.lock entry) to a lock, an environment, a system
layer and the worker runtime.

flash.lock wins where it pins the sets; otherwise uv resolves (cached for FLASH_RESOLVE_TTL) and
apt works out the system layer. Every caller goes through a ``Preparer``: the runtime (build, or
resolve only for workers elsewhere), Ray's node agent (build from a lock resolved elsewhere),
``flash check`` (resolve and probe, build nothing), ``flash lock`` and ``flash build`` (lock
entries with hashes) and ``flash env``. It owns the settings, the store and apt, and reads each
flash.lock once (lock_cache.py). Each set's progress (state, log lines, error) is kept for
dashboards and terminals. What a process prepares it holds in use, so that `flash env prune`
leaves it alone.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from openflash import _subprocess
from openflash._settings import Settings
from openflash.deps.apt import Apt
from openflash.deps.download_sizes import torch_build
from openflash.deps.gpu_base import base_set, from_base
from openflash.deps.lockfile import LockEntry, LockFile
from openflash.deps.namespace_mode import layer_mode
from openflash.deps.package_modules import set_modules
from openflash.deps.project_lock import ProjectLock, constraints_for
from openflash.deps.resolve import Lock, resolve, resolve_pinned, warn_yanked, without_wheels
from openflash.deps.system import SystemLayer, SystemLock, build_layer, resolve_system
from openflash.deps.torch_variants import default_backend, route_torch, with_torch_fallback
from openflash.envs.build_failures import forget_failures
from openflash.envs.bundle import worker_runtime, worker_runtime_soon
from openflash.envs.environment import (
    Environment,
    build_environment,
    environment_key,
)
from openflash.envs.store import Store
from openflash.envs.trust import check_levels
from openflash.envs.uv_options import NO_OPTIONS, UvOptions
from openflash.prepare.build_progress import step_sink
from openflash.prepare.lock_cache import LockFileCache
from openflash.prepare.outcomes import (
    BuildStatus,
    DependencyKey,
    NodeBuild,
    Prepared,
    SetCheck,
)
from openflash.prepare.source_builds import warn_source_builds
from openflash.prepare.system_layers import system_layer_for, system_lock_for
from openflash.workers import events

__all__ = ["Preparer"]

logger = logging.getLogger("openflash")


class Preparer:
    """Prepares dependency sets, in the calling thread (callers run several in threads).

    ``settings`` default to ``Settings.from_env()``; the store (FLASH_HOME) and apt
    (FLASH_APT_DIR) are made from them, once.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.store = Store(self.settings.home)
        #: How many folders builders that died (or were killed) left in tmp/, removed now.
        self.swept = self.store.sweep_tmp()
        cache = self.settings.uv_cache_dir
        if cache.is_relative_to(self.store.root) and cache.is_dir():
            check_levels(cache, self.store.root)  # uv's cache decides what gets installed
        s = self.settings
        self.apt = Apt(s.apt_root, s.system_base, s.resolve_ttl)
        self._lockfiles = LockFileCache()
        self._status: dict[DependencyKey, BuildStatus] = {}
        self._holds: list[IO[bytes]] = []
        self._lock = threading.Lock()

    # The keys.

    def dependency_key(
        self,
        python: tuple[str, ...],
        system: tuple[str, ...],
        lockfile: Path | None = None,
        local: str = "",
        options: UvOptions = NO_OPTIONS,
        *,
        gpu_imports: Iterable[str] = (),
        imports: Iterable[str] = (),
        gpu: bool = False,
        project_lock: ProjectLock | None = None,
    ) -> DependencyKey:
        """An endpoint's key: its declared sets, plus the packages of the GPU base set
        (deps/gpu_base.py, FLASH_GPU_BASE_PACKAGES) that ``gpu_imports`` use and ``python``
        does not declare. ``gpu_imports`` are the top-level modules a GPU endpoint's code
        imports; a CPU endpoint passes none, and so never gets the base set.

        ``imports`` (the top-level modules its code imports) and ``gpu`` (it asks for a GPU)
        decide ``torch_backend="auto"``, the default of an endpoint using torch
        (deps/torch_variants.py's ``default_backend``): the CPU build for a CPU endpoint and on a
        machine without an NVIDIA driver, the driver's CUDA build otherwise. ``project_lock``
        (the project's uv.lock) constrains the resolution to its versions."""
        base = from_base(python, gpu_imports, self.gpu_base())
        options = default_backend(options, python + base, imports, gpu=gpu)
        return DependencyKey(python + base, system, lockfile, local, options, base, project_lock)

    def gpu_base(self) -> tuple[str, ...]:
        """The GPU base set's requirements. Raises ConfigError for a malformed setting."""
        return base_set(self.settings.gpu_base_packages)

    # flash.lock

    def lockfile(self, path: Path) -> LockFile:
        """The parsed flash.lock at ``path``, read once while it does not change.
        Raises DependencyError when it cannot be read."""
        return self._lockfiles.read(path)

    def locked_entry(self, dependencies: DependencyKey) -> LockEntry | None:
        """The flash.lock entry pinning these sets, if the project has one that does."""
        if dependencies.lockfile is None:
            return None
        return self.lockfile(dependencies.lockfile).find(dependencies.python, dependencies.system)

    def stale_entry(self, dependencies: DependencyKey, endpoint: str) -> LockEntry | None:
        """The flash.lock entry locking ``endpoint`` with other sets than it now has, if any."""
        if dependencies.lockfile is None:
            return None
        return self.lockfile(dependencies.lockfile).stale(
            endpoint, dependencies.python, dependencies.system
        )

    # The runtime.

    def status(self, key: DependencyKey) -> BuildStatus:
        return self._status.get(key) or BuildStatus()

    def release(self) -> None:
        """Stop holding what was prepared (the process is done with it)."""
        with self._lock:
            holds, self._holds = self._holds, []
        for handle in holds:
            handle.close()

    def record_use(self, endpoint: str, prepared: Prepared) -> None:
        """Note in the store that ``endpoint`` uses what ``prepared`` built."""
        if prepared.environment is not None and prepared.env_key != "prebuilt":
            self.store.record_use("envs", prepared.environment.key, endpoint)
        if prepared.layer.key:
            self.store.record_use("layers", prepared.layer.key, endpoint)

    def worker_runtime(self) -> Path:
        """The worker runtime's folder in the store (envs/bundle.py), built once."""
        return worker_runtime(self.store)

    def resolve(
        self,
        python: tuple[str, ...],
        options: UvOptions = NO_OPTIONS,
        project: ProjectLock | None = None,
    ) -> Lock:
        """The lock of ``python`` specs with ``options`` (cached for FLASH_RESOLVE_TTL), nothing
        built. A ``+cpu``/``+cuXYZ`` pin of the torch family routes it to the PyTorch index;
        ``project``'s versions constrain it (a spec they cannot satisfy raises
        DependencyConflictError naming the package, the spec and the locked version)."""
        return self._resolved(python, options, project)[0]

    def _resolved(
        self, python: tuple[str, ...], options: UvOptions, project: ProjectLock | None
    ) -> tuple[Lock, UvOptions]:
        """``resolve``'s lock and the routed options it used (deps/torch_variants.py's
        ``with_torch_fallback``: a default torch backend whose index is unreachable)."""
        s, constraints = self.settings, constraints_for(python, project)
        return with_torch_fallback(
            options,
            functools.partial(self.routed, python),
            lambda routed: resolve(
                python,
                store=self.store,
                uv_cache=s.uv_cache_dir,
                ttl=s.resolve_ttl,
                options=routed,
                constraints=constraints,
            ),
        )

    def routed(self, python: tuple[str, ...], options: UvOptions) -> UvOptions:
        """``options`` with the torch family sent to the PyTorch build its pins or
        ``torch_backend`` name (deps/torch_variants.py; FLASH_TORCH_INDEX_URL)."""
        return route_torch(python, options, self.settings.torch_index_url)

    def build(self, dependencies: DependencyKey, *, local: bool = True) -> Prepared:
        """Resolve ``dependencies`` (or take them from flash.lock) and, if ``local``, build.

        Not ``local`` (workers on other machines): the lock and the system closure only, which
        ``build_from_lock`` builds there. Raises the FlashError of what failed (a conflict, an
        unknown apt package, a failed install), also kept in ``status(dependencies)``.
        """
        s = self.settings
        status = self._status[dependencies] = BuildStatus("resolving", started=time.time())
        if s.prebuilt_env is not None:  # an image made by `flash build`: all is installed
            status.state, status.finished = "ready", time.time()
            return Prepared(
                Lock(dependencies.python, "", time.time()),
                "prebuilt",
                Environment("prebuilt", s.prebuilt_env),
                runtime_path=self.worker_runtime(),
            )
        what = " ".join(dependencies.python + dependencies.system) or "no dependencies"
        events.emit("build_started", what=what)
        try:
            with _subprocess.reporting(step_sink(what)), _subprocess.reporting(status.log.append):
                prepared = self._prepare(dependencies, status, local)
        except BaseException as e:
            status.state, status.error, status.finished = "failed", str(e), time.time()
            events.emit(
                "build_finished",
                what=what,
                ok=False,
                seconds=status.finished - status.started,
                error=str(e),
            )
            raise
        status.state, status.finished = "ready", time.time()
        events.emit(
            "build_finished",
            what=what,
            ok=True,
            seconds=status.finished - status.started,
            error=None,
        )
        return prepared

    def _prepare(self, key: DependencyKey, status: BuildStatus, local: bool) -> Prepared:
        python, system = key.python, key.system
        soon = worker_runtime_soon(self.store) if local else None  # meanwhile: an empty store's
        entry = self.locked_entry(key)
        if system:
            _subprocess.report(f"system dependencies: {' '.join(system)}")
        # System packages first: an unknown apt package fails before anything is built.
        if local:
            layer, system_lock = self._system_layer(system, entry), None
        else:
            layer, system_lock = SystemLayer(), self._system_lock(system, entry)
        if entry is not None:
            _subprocess.report(f"installing the versions locked in {key.lockfile}")
            lock = Lock(python, entry.lock_text(), time.time(), base=key.base)
            options = self.routed(python, key.options)
        else:
            if key.base:
                _subprocess.report(
                    f"from the GPU base image (imported, not declared): {' '.join(key.base)}"
                )
            lock, options = self._resolved(python, key.options, key.project_lock)
            lock = dataclasses.replace(lock, base=key.base)
            warn_yanked(lock.yanked)
        if not local:
            key_ = environment_key(lock.text, options)
            return Prepared(lock, key_, system_lock=system_lock, options=options)
        status.state = "building"
        if not self.store.is_ready("envs", environment_key(lock.text, options)):
            warn_source_builds(self.store, self.settings, lock.text, options)
        environment = build_environment(
            self.store,
            lock.text,
            uv_cache=self.settings.uv_cache_dir,
            options=options,
            retry_failed=self.settings.retry_builds,
            compile_later=self.settings.bytecode_later,
        )
        # In use while this process runs: `flash env prune` leaves them alone.
        with self._lock:
            self._holds.append(self.store.hold("envs", environment.key))
            if layer.key:
                self._holds.append(self.store.hold("layers", layer.key))
        runtime = soon.result() if soon else self.worker_runtime()
        return Prepared(lock, environment.key, environment, layer, runtime, options=options)

    def forget_build_failures(self) -> int:
        """Forget the source builds remembered as failed (``--refresh``): they are tried again.
        Returns how many were remembered."""
        return forget_failures(self.store)

    def _system_lock(self, names: tuple[str, ...], entry: LockEntry | None) -> SystemLock | None:
        """The closure to build a layer from elsewhere (resolved here, built on the nodes)."""
        return system_lock_for(names, entry, self.settings, self.store, self.apt)

    def _system_layer(self, names: tuple[str, ...], entry: LockEntry | None) -> SystemLayer:
        return system_layer_for(names, entry, self.settings, self.store, self.apt)

    def _real_paths(self) -> bool:
        """Whether workers here see layers at their real paths (``deps.namespace_mode``)."""
        return layer_mode(self.settings.namespaces).namespaces

    # Ray's node agent.

    def build_from_lock(
        self,
        lock_text: str,
        system_lock: SystemLock | None,
        *,
        overlay: str | None = None,
        options: UvOptions = NO_OPTIONS,
    ) -> NodeBuild:
        """Build on this machine what was resolved elsewhere: the environment of ``lock_text``
        with the install ``options`` it was resolved with (its indexes, find-links, build flags),
        the layer of ``system_lock`` (none without one), the worker runtime, and the environment
        of the ``overlay`` lock if given. Each once per key in this machine's store."""
        uv_cache = self.settings.uv_cache_dir
        environment = build_environment(self.store, lock_text, uv_cache=uv_cache, options=options)
        layer = SystemLayer()
        if system_lock is not None:
            layer = build_layer(self.store, system_lock, self.apt, real_paths=self._real_paths())
        runtime = self.worker_runtime()
        extra = build_environment(self.store, overlay, uv_cache=uv_cache) if overlay else None
        return NodeBuild(environment, layer, runtime, extra)

    # The commands: check, lock, build.

    def check(
        self,
        python: tuple[str, ...],
        system: tuple[str, ...],
        options: UvOptions = NO_OPTIONS,
        base: tuple[str, ...] = (),
        project: ProjectLock | None = None,
        imports: Iterable[str] = (),
    ) -> SetCheck:
        """Resolve a set without building it, for ``flash check``: its system packages (an
        unknown one raises SystemDependencyError), its Python lock (a conflict raises
        DependencyError; ``base``: which of ``python`` came from the GPU base set), the locked
        packages without a wheel here and the modules it provides (of ``imports``: its code's)."""
        if system:
            resolve_system(system, store=self.store, apt=self.apt, ttl=self.settings.resolve_ttl)
        lock, routed = self._resolved(python, options, project)
        lock = dataclasses.replace(lock, base=base)
        uv_cache = self.settings.uv_cache_dir
        missing = without_wheels(lock.text, uv_cache=uv_cache, options=routed)
        variant, size = torch_build(lock.text, uv_cache=uv_cache, options=routed)
        key = environment_key(lock.text, routed)
        built = self.store.path("envs", key) if self.store.is_ready("envs", key) else None
        site = next(built.glob("lib/python*/site-packages"), None) if built else None
        provided, unread = set_modules(
            lock.packages, site, uv_cache=uv_cache, options=routed, skip=missing, wanted=imports
        )
        return SetCheck(lock, tuple(missing), variant, size, provided, unread)

    def lock_entry(
        self,
        endpoints: Sequence[str],
        python: tuple[str, ...],
        system: tuple[str, ...],
        *,
        previous: LockEntry | None = None,
        upgrade: bool | Sequence[str] = False,
        options: UvOptions = NO_OPTIONS,
        project: ProjectLock | None = None,
    ) -> LockEntry:
        """A flash.lock entry for the sets: pinned with hashes, and their system closure.

        ``previous`` versions are kept where they fit unless ``upgrade`` (True: all may move;
        names: those may). Moving also resolves the system packages afresh.
        """
        packages, _ = with_torch_fallback(
            options,
            functools.partial(self.routed, python),
            lambda routed: resolve_pinned(
                python,
                uv_cache=self.settings.uv_cache_dir,
                previous=previous.packages if previous else None,
                upgrade=upgrade,
                options=routed,
                constraints=constraints_for(python, project),
            ),
        )
        ttl = 0 if upgrade else self.settings.resolve_ttl
        closure = resolve_system(system, store=self.store, apt=self.apt, ttl=ttl)
        return LockEntry(list(endpoints), python, system, packages, list(closure.packages))

    def entry_for(self, endpoint: str, dependencies: DependencyKey) -> LockEntry:
        """For ``flash build``: flash.lock's entry for the sets where it has one, else a new
        entry (hashes included) naming ``endpoint``."""
        found = self.locked_entry(dependencies)
        if found is not None:
            return found
        return self.lock_entry(
            [endpoint],
            dependencies.python,
            dependencies.system,
            options=dependencies.options,
            project=dependencies.project_lock,
        )
