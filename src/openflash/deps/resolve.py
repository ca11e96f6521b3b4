"""Specs to a lock with ``uv pip compile``, for the running interpreter, cached with a TTL.

A lock is the sorted text of pinned requirement lines (``name==version``, or ``name @ url``).
Resolutions are cached per (normalised specs, Python, platform) in the store and reused for
FLASH_RESOLVE_TTL seconds.

One resolution everywhere: a call, ``flash check``, ``flash lock`` and the head of a Ray cluster
all ask the index with ``--refresh`` (uv otherwise reuses an index page for as long as its
``Cache-Control`` allows, ten minutes on PyPI, and never ``--offline``), so they agree on the
newest versions the specs allow, whatever uv's cache happens to hold. Only when the index
cannot be reached does resolution fall back, announced by a warning: to an expired resolution of
the same specs, else to what uv's cache alone can satisfy (``--offline``; such a lock is not
cached, so the next call asks the index again).

A pinned version that its index has yanked (PEP 592) is resolved as uv resolves it (only an
exact pin selects a yanked release), and warned of, as pip does: at each call, by ``flash check``
and ``flash lock`` (``Lock.yanked``, kept with the cached resolution; ``warn_yanked`` says it).

What uv prints is parsed by the pure functions of deps/uv_output.py (re-exported here).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from openflash import _subprocess
from openflash.deps.lockfile import LockedPackage, parse_hashed
from openflash.deps.pip_options import resolution_environ
from openflash.deps.uv_output import (
    NETWORK,
    failure_to_error,
    parse_lock,
    warn_yanked,
    yanked_warnings,
)
from openflash.envs.environment import platform_tag, python_tag
from openflash.envs.local_sources import local_sources_digest
from openflash.envs.store import Store, content_key, write_atomic
from openflash.envs.uv import tighten_lock_files, uv_argv, uv_environ
from openflash.envs.uv_options import NO_OPTIONS, UvOptions
from openflash.errors import (
    DependencyError,
    StoreFullError,
    StorePermissionError,
)

__all__ = [
    "Lock",
    "failure_to_error",
    "parse_lock",
    "resolve",
    "resolve_pinned",
    "warn_yanked",
    "without_wheels",
    "yanked_warnings",
]

logger = logging.getLogger("openflash")

RESOLVE_TIMEOUT_S = 300.0

#: Revalidate every index page uv asked about (cheap: a conditional request each).
_FRESH = "--refresh"
_NO_WHEELS = re.compile(r"Because (\S+?)==\S+ has no usable wheels")


@dataclass(frozen=True)
class Lock:
    specs: tuple[str, ...]
    text: str
    resolved_at: float
    #: The specs that came from the GPU base set (deps/gpu_base.py), not from the code.
    #: (Keyword-only, as ``yanked``: two tuples of strings are easily swapped by position.)
    base: tuple[str, ...] = field(default=(), kw_only=True)
    #: Warnings for pinned releases their index has yanked (``yanked_warnings``).
    yanked: tuple[str, ...] = field(default=(), kw_only=True)

    @property
    def packages(self) -> dict[str, str]:
        """Package name to its pin (``==1.2.3``, or ``@ url``)."""
        pins = {}
        for line in self.text.splitlines():
            name, sep, rest = line.partition("==")
            if not sep:
                name, sep, rest = line.partition(" @ ")
                rest = "@ " + rest
            else:
                rest = "==" + rest
            pins[name.strip()] = rest.strip()
        return pins


def resolve(
    specs: tuple[str, ...],
    *,
    store: Store,
    uv_cache: Path,
    ttl: float,
    now: float | None = None,
    options: UvOptions = NO_OPTIONS,
    constraints: tuple[str, ...] = (),
) -> Lock:
    """The lock for the normalised ``specs``: from the cache if younger than ``ttl``, else uv's.

    ``options`` (an endpoint's index, find-links, build and pre-release options) go to uv and
    into the cache's key (as a hash: no credential is written); ``constraints`` (``name==1.2``
    lines: a project lock's versions) too, as uv's ``--constraint``."""
    now = time.time() if now is None else now
    if not specs:
        return Lock(specs, "", now)
    files = local_sources_digest(specs)  # a rebuilt local wheel may declare other deps
    # uv's index and build variables change the answer (hashed into the key, never stored).
    uv_env = sorted(resolution_environ().items())
    parts: tuple[object, ...] = (specs, files, uv_env, options.digest())
    if constraints:  # keys of resolutions without constraints stay as they were
        parts = (*parts, constraints)
    key = content_key("resolve", *parts, python_tag(), platform_tag())
    cache_file = store.resolutions / f"{key}.json"
    cached = _read_cache(store, cache_file, specs)
    if cached is not None and now - cached.resolved_at < ttl:
        return cached
    _subprocess.report(f"resolving with uv: {' '.join(specs)}")
    try:
        done = _uv_compile(specs, uv_cache, options, _FRESH, constraints=constraints)
        lock = Lock(specs, parse_lock(done.stdout), now, yanked=yanked_warnings(done.stderr))
    except DependencyError as e:
        if type(e) is not DependencyError or not NETWORK.search(e.message):
            raise
        return _offline_fallback(specs, cached, uv_cache, e, options, constraints)
    finally:
        tighten_lock_files(uv_cache, store.root)
    payload = {
        "specs": list(specs),
        "lock": lock.text,
        "resolved_at": lock.resolved_at,
        "yanked": list(lock.yanked),
    }
    write_atomic(cache_file, json.dumps(payload, indent=1))
    return lock


def _offline_fallback(
    specs: tuple[str, ...],
    cached: Lock | None,
    uv_cache: Path,
    error: DependencyError,
    options: UvOptions,
    constraints: tuple[str, ...],
) -> Lock:
    """The index is unreachable: an expired resolution of ``specs``, else uv's cache alone
    (``--offline``), each announced by a warning; ``error`` if neither gives a lock."""
    listed = ", ".join(specs)
    if cached is not None:
        logger.warning(
            "openflash: re-resolving %s failed (network); using the resolution from %s",
            listed,
            time.ctime(cached.resolved_at),
        )
        return cached
    try:
        text = parse_lock(
            _uv_compile(specs, uv_cache, options, "--offline", constraints=constraints).stdout
        )
    except DependencyError:
        raise error from None
    logger.warning(
        "openflash: the package index could not be reached; resolved %s offline from uv's "
        "cache, which may hold older versions than the index (it is asked again next time)",
        listed,
    )
    return Lock(specs, text, time.time())


def resolve_pinned(
    specs: tuple[str, ...],
    *,
    uv_cache: Path,
    previous: list[LockedPackage] | None = None,
    upgrade: bool | Sequence[str] = False,
    options: UvOptions = NO_OPTIONS,
    constraints: tuple[str, ...] = (),
) -> list[LockedPackage]:
    """Resolve for ``flash lock``: with hashes, keeping ``previous`` versions where they fit.

    ``upgrade=True`` ignores the previous versions; a list of names lets only those move.
    """
    if not specs:
        return []
    with tempfile.TemporaryDirectory(prefix="openflash-lock-") as tmp:
        output = Path(tmp) / "lock.txt"
        if previous and upgrade is not True:
            # uv prefers the versions already in its output file: the lock stays put.
            output.write_text(
                "".join(f"{p.name}=={p.version}\n" for p in previous if "://" not in p.version)
            )
        extra = (
            []
            if isinstance(upgrade, bool)
            else [a for n in upgrade for a in ("--upgrade-package", n)]
        )
        _subprocess.report(f"resolving with uv (with hashes): {' '.join(specs)}")
        done = _uv_compile(
            specs,
            uv_cache,
            options,
            _FRESH,
            "-o",
            str(output),
            "--generate-hashes",
            *extra,
            constraints=constraints,
        )
        warn_yanked(yanked_warnings(done.stderr))
        return parse_hashed(output.read_text())


def without_wheels(lock_text: str, *, uv_cache: Path, options: UvOptions = NO_OPTIONS) -> list[str]:
    """The locked packages (canonical names) that have no wheel for this interpreter and
    platform: uv would build them from source. ``lock_text`` is a lock's pinned lines; lines
    with a URL (``name @ url``) are not asked about. uv is asked once per such package, first
    offline: where uv's cache alone has a wheel for every pin, the index is not asked (0.1 s
    against 0.25 s for the medium set, on the way to a first environment; bench/RESULTS.md)."""
    pins = [line for line in lock_text.splitlines() if line.strip() and " @ " not in line]
    missing: list[str] = []
    offline = ["--offline"]
    while pins:
        with options.arguments() as args:
            argv = uv_argv(
                "pip",
                "compile",
                "-",
                *offline,
                "--no-deps",
                "--only-binary",
                ":all:",
                "--python",
                sys.executable,
                "--no-header",
                "--quiet",
                *args,
                cache_dir=uv_cache,
            )
            env = {**uv_environ(), **options.environ()}
            done = _subprocess.run(
                argv, input="\n".join(pins) + "\n", env=env, timeout=300, check=False
            )
        if offline:  # not in the cache, or no wheel: the index says which
            offline = []
            if not done.ok:
                continue
        match = _NO_WHEELS.search(done.stderr)
        if done.ok or not match:
            break
        name = canonicalize_name(match[1])
        missing.append(name)
        pins = [p for p in pins if canonicalize_name(p.split("==")[0]) != name]
    return missing


#: What uv says when a disk is full.
_DISK_FULL = ("No space left on device", "os error 28", "Disk quota exceeded")


def _uv_compile(
    specs: tuple[str, ...],
    uv_cache: Path,
    options: UvOptions,
    *args: str,
    constraints: tuple[str, ...] = (),
) -> _subprocess.Completed:
    """``uv pip compile`` of ``specs`` for this interpreter, with ``options`` (index URLs
    through uv's variables, never the argv) and ``constraints`` (a ``--constraint`` file);
    uv's failure as our error (stderr redacted)."""
    with options.arguments() as flags, tempfile.TemporaryDirectory(prefix="openflash-c-") as tmp:
        if constraints:
            file = Path(tmp) / "constraints.txt"
            file.write_text("".join(f"{c}\n" for c in constraints))
            flags = [*flags, "--constraint", str(file)]
        argv = uv_argv(
            "pip",
            "compile",
            "-",
            "--python",
            sys.executable,
            "--no-header",
            "--no-annotate",
            *flags,
            *args,
            cache_dir=uv_cache,
        )
        done = _subprocess.run(
            argv,
            input="".join(f"{s}\n" for s in specs),
            env={**uv_environ(), **options.environ()},
            timeout=RESOLVE_TIMEOUT_S,
            check=False,
            error=DependencyError,
        )
    if not done.ok and any(full in done.stderr for full in _DISK_FULL):
        raise StoreFullError(
            f"no space left on the device holding uv's cache {uv_cache} while resolving "
            f"{', '.join(specs)}:\n{_subprocess.tail(done.stderr, 5)}",
            path=str(uv_cache),
        )
    if not done.ok:
        raise failure_to_error(done.stderr, specs)
    return done


def _read_cache(store: Store, path: Path, specs: tuple[str, ...]) -> Lock | None:
    """The cached resolution at ``path``, None where there is none; one another user could
    have planted is refused (StorePermissionError): it names the wheels to install."""
    try:
        data = json.loads(store.read_text(path))
        if tuple(data["specs"]) != specs:
            return None
        yanked = tuple(str(w) for w in data.get("yanked", []))
        return Lock(specs, str(data["lock"]), float(data["resolved_at"]), yanked=yanked)
    except StorePermissionError:
        raise
    except (OSError, ValueError, KeyError, TypeError):
        return None
