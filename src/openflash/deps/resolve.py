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

What uv prints is parsed by the pure functions ``parse_lock``, ``yanked_warnings`` and
``failure_to_error``.
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
from openflash.envs.environment import platform_tag, python_tag
from openflash.envs.local_sources import local_sources_digest
from openflash.envs.store import Store, content_key, write_atomic
from openflash.envs.uv import tighten_lock_files, uv_argv, uv_environ
from openflash.envs.uv_options import NO_OPTIONS, UvOptions
from openflash.errors import DependencyConflictError, DependencyError

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

_NOT_FOUND = re.compile(r"Because (\S+) was not found in the package registry")
_NO_VERSION = re.compile(
    r"^Because there is no version of (\S+) and you require \1, we can conclude that your "
    r"requirements are unsatisfiable\.$"
)
_NETWORK = re.compile(
    r"Failed to fetch|error sending request|tcp connect error|dns error|Connection refused|"
    r"timed out|Network is unreachable|Could not connect|network was disabled",
    re.IGNORECASE,
)
#: Revalidate every index page uv asked about (cheap: a conditional request each).
_FRESH = "--refresh"
_NO_WHEELS = re.compile(r"Because (\S+?)==\S+ has no usable wheels")
_YANKED = re.compile(r"`([^`]+)` is yanked(?: \(reason: \"(.*)\"\))?")


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


def parse_lock(stdout: str) -> str:
    """The pinned lines of ``uv pip compile`` output, comments and blank lines dropped, sorted."""
    lines = []
    for raw in stdout.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return "".join(f"{line}\n" for line in sorted(lines))


def yanked_warnings(stderr: str) -> tuple[str, ...]:
    """A warning for each yanked release uv's ``stderr`` names (``warning: `x==1.1` is yanked
    (reason: "...")``), with the index's reason."""
    found = []
    for match in _YANKED.finditer(stderr):
        reason = f" (reason: {match[2]!r})" if match[2] else ""
        found.append(
            f"{match[1]} is yanked from its index{reason}: pin another version, "
            "unless you mean to install this one"
        )
    return tuple(dict.fromkeys(found))


def warn_yanked(warnings: tuple[str, ...]) -> None:
    """Tell the user (the openflash logger, the progress channel) of yanked pins."""
    for text in warnings:
        _subprocess.report(f"warning: {text}")
        logger.warning("openflash: %s", text)


def failure_to_error(stderr: str, specs: tuple[str, ...]) -> DependencyError:
    """The error a failed ``uv pip compile`` means, with uv's explanation."""
    explanation = _explanation(stderr)
    listed = ", ".join(repr(s) for s in specs)
    missing = _NOT_FOUND.search(stderr)
    if missing:
        name = missing[1]
        # uv says why an index could not be asked (401: credentials), the URL without them.
        said = [
            line.split("hint:", 1)[1].strip()
            for line in stderr.splitlines()
            if line.strip().startswith("hint:")
        ]
        return DependencyError(
            f"package {name!r} was not found on the package index (dependencies: {listed})"
            + "".join(f"\n{line}" for line in said),
            hint="check the index URL and its credentials (index_url, extra_index_urls)"
            if said
            else f"check the spelling of {name!r} (https://pypi.org/project/{name}/), or remove it",
        )
    if "No solution found" in stderr:
        explanation = "\n".join(
            line for line in explanation.splitlines() if not line.startswith("No solution found")
        )
        no_version = _NO_VERSION.match(explanation)
        if no_version:
            return DependencyError(
                f"no release matches {no_version[1]!r} (dependencies: {listed})",
                hint="check the version on the package index, or relax the pin",
            )
        return DependencyConflictError(
            f"these dependencies cannot be installed together: {listed}\n{explanation}",
        )
    if _NETWORK.search(stderr):
        return DependencyError(
            f"could not reach the package index to resolve {listed}:\n{explanation}",
            hint="check the network connection or the index settings (UV_INDEX_URL), then retry",
        )
    return DependencyError(
        f"resolving {listed} failed:\n{explanation}",
        hint="read uv's message above; fix the named requirement and call again",
    )


def resolve(
    specs: tuple[str, ...],
    *,
    store: Store,
    uv_cache: Path,
    ttl: float,
    now: float | None = None,
    options: UvOptions = NO_OPTIONS,
) -> Lock:
    """The lock for the normalised ``specs``: from the cache if younger than ``ttl``, else uv's.

    ``options`` (an endpoint's index, find-links, build and pre-release options) go to uv and
    into the cache's key (as a hash: no credential is written)."""
    now = time.time() if now is None else now
    if not specs:
        return Lock(specs, "", now)
    files = local_sources_digest(specs)  # a rebuilt local wheel may declare other deps
    # uv's index and build variables change the answer (hashed into the key, never stored).
    uv_env = sorted(resolution_environ().items())
    key = content_key(
        "resolve", specs, files, uv_env, options.digest(), python_tag(), platform_tag()
    )
    cache_file = store.resolutions / f"{key}.json"
    cached = _read_cache(cache_file, specs)
    if cached is not None and now - cached.resolved_at < ttl:
        return cached
    _subprocess.report(f"resolving with uv: {' '.join(specs)}")
    try:
        done = _uv_compile(specs, uv_cache, options, _FRESH)
        lock = Lock(specs, parse_lock(done.stdout), now, yanked=yanked_warnings(done.stderr))
    except DependencyError as e:
        if type(e) is not DependencyError or not _NETWORK.search(e.message):
            raise
        return _offline_fallback(specs, cached, uv_cache, e, options)
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
        text = _compile(specs, uv_cache, options, "--offline")
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
            specs, uv_cache, options, _FRESH, "-o", str(output), "--generate-hashes", *extra
        )
        warn_yanked(yanked_warnings(done.stderr))
        return parse_hashed(output.read_text())


def without_wheels(lock_text: str, *, uv_cache: Path, options: UvOptions = NO_OPTIONS) -> list[str]:
    """The locked packages (canonical names) that have no wheel for this interpreter and
    platform: uv would build them from source. ``lock_text`` is a lock's pinned lines; lines
    with a URL (``name @ url``) are not asked about. uv is asked once per such package."""
    pins = [line for line in lock_text.splitlines() if line.strip() and " @ " not in line]
    missing: list[str] = []
    while pins:
        with options.arguments() as args:
            argv = uv_argv(
                "pip",
                "compile",
                "-",
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
        match = _NO_WHEELS.search(done.stderr)
        if done.ok or not match:
            break
        name = canonicalize_name(match[1])
        missing.append(name)
        pins = [p for p in pins if canonicalize_name(p.split("==")[0]) != name]
    return missing


def _compile(specs: tuple[str, ...], uv_cache: Path, options: UvOptions, *args: str) -> str:
    return parse_lock(_uv_compile(specs, uv_cache, options, *args).stdout)


def _uv_compile(
    specs: tuple[str, ...], uv_cache: Path, options: UvOptions, *args: str
) -> _subprocess.Completed:
    """``uv pip compile`` of ``specs`` for this interpreter, with ``options`` (index URLs
    through uv's variables, never the argv); uv's failure as our error (stderr redacted)."""
    with options.arguments() as flags:
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
    if not done.ok:
        raise failure_to_error(done.stderr, specs)
    return done


def _read_cache(path: Path, specs: tuple[str, ...]) -> Lock | None:
    try:
        data = json.loads(path.read_text())
        if tuple(data["specs"]) != specs:
            return None
        yanked = tuple(str(w) for w in data.get("yanked", []))
        return Lock(specs, str(data["lock"]), float(data["resolved_at"]), yanked=yanked)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _explanation(stderr: str) -> str:
    """uv's error text without its ``error:``/``cause:`` labels, indentation kept."""
    lines = []
    for raw in stderr.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.startswith(("Resolved ", "Using ")):
            continue
        line = re.sub(r"^(\s*)(?:error|cause|hint): ", r"\1", line)
        lines.append(line.strip())
    return "\n".join(lines)
