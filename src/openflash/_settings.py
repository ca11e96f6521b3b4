"""Settings read from the environment, each with its default.

- FLASH_HOME: the store (environments, layers, locks, uv cache); default: the user cache dir.
- FLASH_UV_CACHE_DIR: uv's cache; default uv's own UV_CACHE_DIR if set, else
  $FLASH_HOME/uv-cache. Keep it on FLASH_HOME's disk, so that installs are hardlinks.
- FLASH_RESOLVE_TTL: seconds a resolution of one spec set is reused before uv asks the index
  again; default 86400.
- FLASH_REQUIRE_GPU: 1 makes a GPU endpoint on a machine without GPUs an error; default 0.
- FLASH_WORKER_MAX_RSS: a memory cap for each local worker (bytes, or with K, M, G: ``512M``),
  enforced as RLIMIT_DATA (the worker's private writable memory: heap, thread stacks) and on its
  whole process tree, child processes and shared memory included (backends/memory_cap.py); a
  call going past it fails with a MemoryError that names the cap, and the worker is replaced.
  Unset or 0: no cap.
- FLASH_FORK: 0 starts every local worker as a new interpreter; default 1: workers are forked from
  a template process per environment that has already imported what the endpoint imports.
- FLASH_TEMPLATE_IDLE_TIMEOUT: seconds a worker template stays with none of its workers alive
  and no new worker asked of it, so that a pool scaled to zero forks its next worker instead of
  starting an interpreter; default 600 (longer than the workers' default idleTimeout, 60 s);
  0: stopped whenever no worker forked from it is alive (so most workers are spawned).
- FLASH_BYTECODE: "background" (default): a new environment is published as soon as its
  packages are installed, and the bytecode the store does not have yet is compiled by a
  detached process while its first worker starts (it imports from source meanwhile;
  envs/bytecode_later.py): what that worker is expected to import first (envs/import_order.py),
  then the rest at a low CPU priority; "eager": compiled before publishing.
- FLASH_BYTECODE_NICE: how much that background compiler yields the CPUs once past what the first
  worker is expected to import, 0-19 (the nice value
  of its process and of its session's scheduling group); default 10: about a tenth of a CPU
  that a worker wants; 19 takes only what is left (which may be little on a busy machine).
- FLASH_SYSTEM_DEPS: how system_dependencies are provided: "layer" (default: downloaded and
  extracted into a cached layer, the host untouched), "host" (apt-get install on the host, as
  root; for disposable machines and containers) or "none" (the image already has them: what
  `flash build`'s images set).
- FLASH_PREBUILT_ENV: a virtual environment to run every endpoint in, instead of resolving and
  building (what `flash build`'s images set, one endpoint per image).
- FLASH_BACKEND: where workers run: "local" (default: processes on this machine) or "ray" (actors
  on the Ray cluster at RAY_ADDRESS; needs `pip install 'openflash[ray]'`).
- FLASH_APT_DIR: apt's private index, .deb cache and state; default $FLASH_HOME/apt.
- FLASH_SYSTEM_BASE: the dpkg status file describing what a worker's base system already has;
  default /var/lib/dpkg/status (this machine's).
- FLASH_NAMESPACES: "off" runs local workers without their private namespace, with system layers
  relocated (found through variables); default "auto": in a namespace with each layer at its real
  paths wherever the kernel allows (deps/namespace_mode.py).
- FLASH_NON_DUMPABLE: which processes that start workers mark themselves not dumpable (Linux's
  ``PR_SET_DUMPABLE``), so that their ``/proc/<pid>/environ`` and memory are out of reach of
  other processes of their user, workers included (runtime/dumpable.py): "server" (default:
  ``flash run``), "all" (also a Python program, when its runtime starts) or "off" (none: for
  core dumps of the server, or py-spy and gdb attached to it by its own user).
- FLASH_VOLUMES: the folder holding named volumes (``NetworkVolume(name=...)``, one folder
  each, seen by workers at /runpod-volume); default $FLASH_HOME/volumes.
- FLASH_CONTAINER_ENGINE: the container engine that runs endpoints with a ``dockerImage``:
  "podman", "docker", or a path to either; default: podman, else docker, whichever answers.
- FLASH_RAY_PROJECT_LIMIT: the most bytes of a project folder shipped to Ray nodes (K, M, G
  allowed); default 100M; 0: no limit.
- FLASH_RETRY_BUILDS: 1 tries again the source builds that failed here before (by default a
  failed build is remembered per package, version, options and platform, and the next
  environment needing it fails at once with the remembered reason; envs/build_failures.py).
- FLASH_RAY_PACKAGE_CACHE: 1 (default): the Ray driver serves the package files its nodes
  install through a read-only caching index (deps/package_cache.py); 0: nodes use the index.
- FLASH_BUILD_LOCK_TIMEOUT: seconds a caller waits for another process's build of the
  environment (or layer, runtime, image) it needs before failing with EnvironmentBuildError
  naming that process; default 1800; 0 waits for ever. After a few seconds of waiting it says
  whose build it waits for (envs/build_locks.py).
- FLASH_MAX_RESULT_BYTES: the largest result (its JSON) a ``flash run`` call may return, in
  bytes or with K, M, G; default 20M (Runpod's largest documented payload, /runsync's 20 MB);
  0: no cap. A larger result fails its job (server/results.py).
- FLASH_RUNSYNC_KEEP_BYTES: how many bytes of /runsync answers (their JSON) ``flash run`` keeps
  for ``/status`` (each for a minute, as Runpod does), in bytes or with K, M, G; default 64M; the
  oldest are dropped first, one larger is not kept; 0 keeps none (server/endpoint_health.py).
- FLASH_APT_LOCK_TIMEOUT: seconds a build waits for one of apt's locks that another process
  holds (an apt-get left over or suspended) before failing with SystemDependencyError naming that
  pid; default 600; 0 waits for ever. After a few seconds it says whose lock it waits for
  (deps/apt_locks.py).
- FLASH_WORKER_START_TIMEOUT: seconds a worker has, from being asked for (forked or spawned) to
  saying it is ready, before it is killed and the calls waiting for it fail with
  WorkerCrashedError naming the endpoint and its pid; default 120; 0 waits for ever.
- FLASH_GPU_BASE_PACKAGES: the GPU base set (deps/gpu_base.py), comma-separated requirements;
  unset: the packages of Runpod's GPU image; empty: none.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from openflash.errors import ConfigError

#: Backends by name, imported only when chosen (Ray is an optional extra).
BACKENDS = {
    "local": "openflash.backends.local:LocalBackend",
    "ray": "openflash.backends.ray:RayBackend",
}

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


#: FLASH_REPLY_SPIN_US's default (seconds): a few warm calls' round trips.
REPLY_SPIN = 250e-6


@dataclass(frozen=True)
class Settings:
    home: Path
    uv_cache_dir: Path
    resolve_ttl: float
    require_gpu: bool
    system_deps_mode: str = "layer"
    apt_dir: Path | None = None
    system_base: Path = Path("/var/lib/dpkg/status")
    prebuilt_env: Path | None = None
    backend: str = "local"
    ray_address: str | None = None
    worker_max_rss: int | None = None
    fork: bool = True
    #: FLASH_TEMPLATE_IDLE_TIMEOUT: how long a template outlives its last worker (seconds).
    template_idle_timeout: float = 600.0
    #: FLASH_BYTECODE: whether bytecode the store lacks is compiled after publishing.
    bytecode_later: bool = True
    container_engine: str | None = None
    #: The PyTorch index's base URL: its variants are ``<base>/cpu``, ``<base>/cu121``, ...
    torch_index_url: str = "https://download.pytorch.org/whl"
    #: FLASH_NAMESPACES: whether local workers may run in a private namespace.
    namespaces: bool = True
    #: FLASH_VOLUMES: where named volumes live (None: FLASH_HOME/volumes).
    volumes_dir: Path | None = None
    #: FLASH_RAY_PROJECT_LIMIT: the most bytes of a project shipped to Ray nodes (None: no limit).
    ray_project_limit: int | None = 100 << 20
    #: FLASH_RAY_PACKAGE_CACHE: whether the Ray driver serves its nodes' package files.
    ray_package_cache: bool = True
    #: FLASH_GPU_BASE_PACKAGES as given (None: unset, the image's packages).
    gpu_base_packages: str | None = None
    #: FLASH_RETRY_BUILDS: whether source builds that failed before are tried again.
    retry_builds: bool = False
    #: FLASH_BUILD_LOCK_TIMEOUT: seconds to wait for another builder of a key (0: for ever).
    build_lock_timeout: float = 1800.0
    #: FLASH_CANCEL_GRACE_S: seconds a cancelled call has to stop before its worker is killed.
    cancel_grace: float = 2.0
    #: FLASH_SHARED_MEMORY_MIN: a call's frame from this size to a local worker goes through
    #: shared memory (bytes; None: never).
    shared_memory_min: int | None = 64 << 20
    #: FLASH_NON_DUMPABLE: "server", "all" or "off" (runtime/dumpable.py).
    non_dumpable: str = "server"
    #: FLASH_REPLY_SPIN_US: how long a warm call's caller watches for its reply busy before
    #: it sleeps until the reply comes (seconds; 0: never; runtime/spins.py).
    reply_spin: float = REPLY_SPIN

    @property
    def apt_root(self) -> Path:
        return self.apt_dir or self.home / "apt"

    @property
    def volumes_root(self) -> Path:
        return self.volumes_dir or self.home / "volumes"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        home_text = env.get("FLASH_HOME") or platformdirs.user_cache_dir("openflash")
        home = Path(home_text).expanduser().absolute()
        cache_text = env.get("FLASH_UV_CACHE_DIR") or env.get("UV_CACHE_DIR")
        uv_cache = Path(cache_text).expanduser().absolute() if cache_text else home / "uv-cache"
        mode = env.get("FLASH_SYSTEM_DEPS", "").strip().lower() or "layer"
        if mode not in ("layer", "host", "none"):
            raise ConfigError(
                f"FLASH_SYSTEM_DEPS={mode!r} is not a way to provide system dependencies",
                hint="set FLASH_SYSTEM_DEPS to layer (the default), host or none",
            )
        backend = env.get("FLASH_BACKEND", "").strip().lower() or "local"
        if backend not in BACKENDS:
            raise ConfigError(
                f"FLASH_BACKEND={backend!r} is not a backend",
                hint=f"set FLASH_BACKEND to one of: {', '.join(BACKENDS)}",
            )
        return cls(
            home=home,
            uv_cache_dir=uv_cache,
            resolve_ttl=_seconds(env, "FLASH_RESOLVE_TTL", 86400.0),
            torch_index_url=(
                env.get("FLASH_TORCH_INDEX_URL") or "https://download.pytorch.org/whl"
            ).rstrip("/"),
            require_gpu=_flag(env, "FLASH_REQUIRE_GPU"),
            retry_builds=_flag(env, "FLASH_RETRY_BUILDS"),
            system_deps_mode=mode,
            apt_dir=_path(env, "FLASH_APT_DIR"),
            system_base=_path(env, "FLASH_SYSTEM_BASE") or Path("/var/lib/dpkg/status"),
            prebuilt_env=_path(env, "FLASH_PREBUILT_ENV"),
            backend=backend,
            ray_address=env.get("RAY_ADDRESS") or None,
            worker_max_rss=_size(env, "FLASH_WORKER_MAX_RSS"),
            fork=_flag(env, "FLASH_FORK") if env.get("FLASH_FORK", "").strip() else True,
            template_idle_timeout=_seconds(env, "FLASH_TEMPLATE_IDLE_TIMEOUT", 600.0),
            bytecode_later=_bytecode_later(env),
            container_engine=env.get("FLASH_CONTAINER_ENGINE", "").strip() or None,
            namespaces=_namespaces(env),
            volumes_dir=_path(env, "FLASH_VOLUMES"),
            ray_project_limit=(
                _size(env, "FLASH_RAY_PROJECT_LIMIT")
                if env.get("FLASH_RAY_PROJECT_LIMIT", "").strip()
                else 100 << 20
            ),
            ray_package_cache=(
                _flag(env, "FLASH_RAY_PACKAGE_CACHE")
                if env.get("FLASH_RAY_PACKAGE_CACHE", "").strip()
                else True
            ),
            gpu_base_packages=env.get("FLASH_GPU_BASE_PACKAGES"),
            build_lock_timeout=build_lock_timeout(env),
            cancel_grace=cancel_grace(env),
            shared_memory_min=shared_memory_min(env),
            non_dumpable=_non_dumpable(env),
            reply_spin=_reply_spin(env),
        )


def _reply_spin(env: dict[str, str]) -> float:
    text = env.get("FLASH_REPLY_SPIN_US", "").strip()
    if not text:
        return REPLY_SPIN
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1e6:
        raise ConfigError(
            f"FLASH_REPLY_SPIN_US={text!r} is not a number of microseconds from 0 to 1000000",
            hint="set FLASH_REPLY_SPIN_US to microseconds, e.g. 250, or 0 to never spin",
        )
    return value / 1e6


def build_lock_timeout(environ: dict[str, str] | None = None) -> float:
    """FLASH_BUILD_LOCK_TIMEOUT alone (the store reads it where it waits)."""
    env = os.environ if environ is None else environ
    return _seconds(dict(env), "FLASH_BUILD_LOCK_TIMEOUT", 1800.0)


def apt_lock_timeout(environ: dict[str, str] | None = None) -> float:
    """FLASH_APT_LOCK_TIMEOUT alone (read where apt is run)."""
    env = os.environ if environ is None else environ
    return _seconds(dict(env), "FLASH_APT_LOCK_TIMEOUT", 600.0)


def worker_start_timeout(environ: dict[str, str] | None = None) -> float:
    """FLASH_WORKER_START_TIMEOUT alone (a pool's bound on a worker's start)."""
    env = os.environ if environ is None else environ
    return _seconds(dict(env), "FLASH_WORKER_START_TIMEOUT", 120.0)


def cancel_grace(environ: dict[str, str] | None = None) -> float:
    """FLASH_CANCEL_GRACE_S alone (a pool reads it when a call is cancelled)."""
    env = os.environ if environ is None else environ
    return _seconds(dict(env), "FLASH_CANCEL_GRACE_S", 2.0)


#: FLASH_MAX_RESULT_BYTES's default: Runpod documents 20 MB as /runsync's largest payload (and
#: 10 MB for /run), and advises object storage for more.
DEFAULT_MAX_RESULT_BYTES = 20 << 20


def max_result_bytes(environ: dict[str, str] | None = None) -> int | None:
    """FLASH_MAX_RESULT_BYTES alone, in bytes (``flash run`` reads it at start); None: no cap."""
    env = dict(os.environ if environ is None else environ)
    if not env.get("FLASH_MAX_RESULT_BYTES", "").strip():
        return DEFAULT_MAX_RESULT_BYTES
    return _size(env, "FLASH_MAX_RESULT_BYTES")


#: FLASH_RUNSYNC_KEEP_BYTES's default: room for three answers of Runpod's largest /runsync
#: payload (20 MB), kept a minute each.
DEFAULT_RUNSYNC_KEEP_BYTES = 64 << 20


def runsync_keep_bytes(environ: dict[str, str] | None = None) -> int:
    """FLASH_RUNSYNC_KEEP_BYTES alone, in bytes (``flash run`` reads it at start); 0: none kept.
    ConfigError naming the value where it is not a size."""
    env = dict(os.environ if environ is None else environ)
    if not env.get("FLASH_RUNSYNC_KEEP_BYTES", "").strip():
        return DEFAULT_RUNSYNC_KEEP_BYTES
    return _size(env, "FLASH_RUNSYNC_KEEP_BYTES") or 0


#: FLASH_SHARED_MEMORY_MIN's default (bytes).
SHARED_MEMORY_MIN = 64 << 20


def shared_memory_min(environ: dict[str, str] | None = None) -> int | None:
    """FLASH_SHARED_MEMORY_MIN alone (a pool reads it when it is made): a call's frame of at
    least this many bytes to a worker on this machine goes through shared memory
    (workers/shared_memory.py); 64 MiB by default; 0 never (None)."""
    env = dict(os.environ if environ is None else environ)
    if not env.get("FLASH_SHARED_MEMORY_MIN", "").strip():
        return SHARED_MEMORY_MIN
    return _size(env, "FLASH_SHARED_MEMORY_MIN")


def quiet(environ: dict[str, str] | None = None) -> bool:
    """FLASH_QUIET alone (the CLI's ``-q`` and a first call's build progress read it): a yes/no
    value (1, true, yes, on / 0, false, no, off, empty); ConfigError naming any other."""
    return _flag(dict(os.environ if environ is None else environ), "FLASH_QUIET")


def _path(env: dict[str, str], name: str) -> Path | None:
    text = env.get(name, "").strip()
    return Path(text).expanduser().absolute() if text else None


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigError(
            f"{name}={text!r} is not a number of seconds",
            hint=f"set {name} to a non-negative number, e.g. {name}={int(default)}",
        )
    return value


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(env: dict[str, str], name: str) -> int | None:
    """Bytes from ``1048576``, ``512M``, ``2G``, ``1.5GiB`` (powers of 1024); None for unset/0."""
    text = env.get(name, "").strip()
    match = _SIZE.match(text.upper())
    if not text:
        return None
    if match is None:
        raise ConfigError(
            f"{name}={text!r} is not a size",
            hint=f"set {name} to bytes or a size with K, M or G, e.g. {name}=2G (0 for no cap)",
        )
    return int(float(match[1]) * _UNITS[match[2]]) or None


def _flag(env: dict[str, str], name: str) -> bool:
    text = env.get(name, "").strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={text!r} is not a yes/no value", hint=f"set {name}=1 or {name}=0")


def _namespaces(env: dict[str, str]) -> bool:
    word = env.get("FLASH_NAMESPACES", "").strip().lower()
    if word in ("", "auto") or word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(
        f"FLASH_NAMESPACES={word!r} is not a namespace mode",
        hint="set FLASH_NAMESPACES to auto (the default) or off",
    )


#: FLASH_NON_DUMPABLE's values: which processes hide their /proc files from their own user.
NON_DUMPABLE_MODES = ("server", "all", "off")


def _non_dumpable(env: dict[str, str]) -> str:
    word = env.get("FLASH_NON_DUMPABLE", "").strip().lower() or "server"
    if word in NON_DUMPABLE_MODES:
        return word
    raise ConfigError(
        f"FLASH_NON_DUMPABLE={word!r} is not one of {', '.join(NON_DUMPABLE_MODES)}",
        hint="set FLASH_NON_DUMPABLE to server (the default), all or off",
    )


def _bytecode_later(env: dict[str, str]) -> bool:
    word = env.get("FLASH_BYTECODE", "").strip().lower()
    if word in ("", "background"):
        return True
    if word == "eager":
        return False
    raise ConfigError(
        f"FLASH_BYTECODE={word!r} is not a way to compile bytecode",
        hint="set FLASH_BYTECODE to background (the default) or eager",
    )
