"""apt, run privately: its own package index, .deb cache and dpkg state, never the host's.

    FLASH_APT_DIR/ (default FLASH_HOME/apt)
      lists/      the private package index, refreshed by ``apt-get update`` when missing or stale
      archives/   downloaded .debs, shared by every layer build
      cache/      apt's binary caches
      state/      a copy of the base system's dpkg status (apt locks this directory, not the
                  host's /var/lib/dpkg)

Nothing here changes the host: packages are only simulated and downloaded. Every call takes one
file lock, because apt refuses (rather than waits) when its own locks are taken. What apt prints
is parsed by the pure functions ``parse_simulation``, ``failure_to_error`` and ``http_hosts``.

On a Ray node, ``use_proxy`` sends the requests for the archives' hosts through the cluster
package cache (deps/package_cache.py): apt's own ``Acquire::http::Proxy::<host>``, so that apt
still verifies every file against the archive's signed index. A command that fails through the
proxy is run once more without it (the cache unreachable: the archive is asked directly).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from openflash import _subprocess
from openflash.envs.store import make_dirs
from openflash.errors import SystemDependencyError

__all__ = [
    "Apt",
    "DebPackage",
    "deb_filename",
    "failure_to_error",
    "http_hosts",
    "parse_simulation",
]

logger = logging.getLogger("openflash")

APT_TIMEOUT_S = 900.0
_REFRESHED = ".openflash-refreshed"
#: No recommends (layers hold what is needed), and nothing the base has is upgraded because it
#: was named: a layer adds what the base lacks.
_INSTALL_FLAGS = ("--no-install-recommends", "--no-upgrade")
#: After "unable to locate", an index older than this is refreshed and the question asked again.
RECHECK_AFTER_S = 600.0

_INST = re.compile(
    r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[(?P<old>[^\]]+)\] )?"
    r"\((?P<version>\S+) (?P<origin>.*?) ?\[(?P<arch>[^\]]+)\]\)"
)
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_UNKNOWN = (
    re.compile(r"Unable to locate package (\S+)"),
    re.compile(r"Version '[^']*' for '([^']+)' was not found"),
    re.compile(r"Package '?([^'\s]+)'? has no installation candidate"),
    re.compile(r"Couldn't find any package by (?:glob|regex) '([^']+)'"),
)


@dataclass(frozen=True)
class DebPackage:
    """One package of a closure: what apt would install."""

    name: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        return deb_filename(self.name, self.version, self.arch)

    @property
    def pin(self) -> str:
        """``name:arch=version``, what apt-get install takes to get exactly this package."""
        return (
            f"{self.name}:{self.arch}={self.version}"
            if self.arch != "all"
            else (f"{self.name}={self.version}")
        )


def deb_filename(name: str, version: str, arch: str) -> str:
    """The file name apt gives a downloaded package (an epoch's colon becomes %3a)."""
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def parse_simulation(stdout: str) -> list[DebPackage]:
    """The packages an ``apt-get install -s`` would install or upgrade, in its order."""
    found = []
    for line in stdout.splitlines():
        match = _INST.match(line)
        if match:
            found.append(DebPackage(match["name"], match["version"], match["arch"]))
    return found


def http_hosts(repositories: str) -> tuple[str, ...]:
    """The hosts of the plain-http archives in ``apt-get indextargets --format '$(REPO_URI)'``'s
    output (one URI a line), sorted, each once: those an http proxy can serve."""
    hosts = set()
    for line in repositories.split():
        parts = urllib.parse.urlsplit(line.strip())
        if parts.scheme == "http" and parts.hostname and _HOST.fullmatch(parts.hostname):
            hosts.add(parts.hostname)
    return tuple(sorted(hosts))


def failure_to_error(output: str, names: Sequence[str]) -> SystemDependencyError:
    """The error a failed apt-get means, quoting apt's ``E:`` lines."""
    lines = output.splitlines()
    errors = [line[3:].strip() for line in lines if line.startswith("E: ")]
    unmet = []
    if "The following packages have unmet dependencies:" in lines:
        start = lines.index("The following packages have unmet dependencies:")
        unmet = [line for line in lines[start:] if not line.startswith("E: ")]
    quoted = "\n".join(unmet + errors) or _subprocess.tail(output, 10)
    for pattern in _UNKNOWN:
        for line in errors:
            match = pattern.search(line)
            if match:
                name = match[1]
                return SystemDependencyError(
                    f"system package {name!r} is not known to apt (system_dependencies: "
                    f"{list(names)}):\n{quoted}",
                    hint=f"check the name and version of {name!r} with `apt-cache policy "
                    f"{name.split('=')[0]}` or on https://packages.debian.org",
                )
    return SystemDependencyError(
        f"apt cannot install system_dependencies {list(names)}:\n{quoted}",
        hint="read apt's message above; it usually names the package to drop or pin",
    )


class Apt:
    """Private apt for one FLASH_APT_DIR and one base system (a dpkg status file)."""

    def __init__(self, root: Path, base_status: Path, index_ttl: float) -> None:
        self.root = root
        self.base_status = base_status
        self.index_ttl = index_ttl
        #: The package cache's URL (http://host:port) apt's requests go through, or "".
        self.proxy = ""
        #: The archives' hosts whose requests go through ``proxy``.
        self.proxy_hosts: tuple[str, ...] = ()

    def use_proxy(self, url: str, hosts: tuple[str, ...]) -> None:
        """Send requests for ``hosts`` (archives' hosts, plain http) through the proxy at
        ``url`` (the cluster package cache); "" and () for none."""
        self.proxy, self.proxy_hosts = url, tuple(h for h in hosts if _HOST.fullmatch(h))

    def repository_hosts(self) -> tuple[str, ...]:
        """The hosts of the plain-http archives this machine's apt sources name (() where there
        is no apt)."""
        if shutil.which("apt-get") is None:
            return ()
        argv = ["apt-get", *self.options(), "indextargets", "--no-release-info"]
        argv += ["--format", "$(REPO_URI)"]
        done = _subprocess.run(argv, env=_apt_environ(), timeout=60, check=False)
        return http_hosts(done.stdout) if done.ok else ()

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    def options(self, *, direct: bool = False) -> list[str]:
        """apt's ``-o`` arguments: this folder's state and caches, and (unless ``direct``) the
        proxy for its hosts."""
        state = self.root / "state"
        options: dict[str, object] = {
            "Dir::State::Lists": self.root / "lists",
            "Dir::State::status": state / "status",
            "Dir::State::extended_states": state / "extended_states",
            "Dir::Cache": self.root / "cache",
            "Dir::Cache::archives": self.archives,
            "Dir::Log": self.root / "log",
            "APT::Get::List-Cleanup": "0",
            "Acquire::Retries": "2",
        }
        if os.geteuid() == 0:
            # As root apt drops to the _apt user to download, which cannot write here.
            options["APT::Sandbox::User"] = "root"
        if self.proxy and not direct:
            options.update({f"Acquire::http::Proxy::{h}": self.proxy for h in self.proxy_hosts})
        return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]

    @contextmanager
    def locked(self) -> Iterator[None]:
        make_dirs(self.root)
        with FileLock(str(self.root / "openflash.lock"), mode=0o644):
            for sub in ("lists/partial", "archives/partial", "cache", "state", "log"):
                make_dirs(self.root / sub)
            self._sync_base()
            yield

    def base_fingerprint(self) -> tuple[int, int]:
        """(size, mtime) of the base system's status file: it changes when a package does."""
        try:
            st = self.base_status.stat()
        except OSError as e:
            raise SystemDependencyError(
                f"cannot read the base system's package list {self.base_status}: {e}",
                hint="system_dependencies need a Debian-based system; set FLASH_SYSTEM_BASE to "
                "a dpkg status file if it lives elsewhere",
            ) from e
        return st.st_size, st.st_mtime_ns

    def _sync_base(self) -> None:
        """Keep state/status a copy of the base system's status file."""
        target = self.root / "state" / "status"
        wanted = self.base_fingerprint()
        try:
            if (target.stat().st_size, target.stat().st_mtime_ns) == wanted:
                return
        except OSError:
            pass
        shutil.copy2(self.base_status, target)

    def index_age(self) -> float | None:
        """Seconds since the private index was refreshed, or None if there is none."""
        try:
            return time.time() - (self.root / "lists" / _REFRESHED).stat().st_mtime
        except OSError:
            return None

    def ensure_index(self, *, max_age: float | None = None) -> None:
        """Refresh the private index when it is missing or older than ``max_age``."""
        limit = self.index_ttl if max_age is None else max_age
        age = self.index_age()
        if age is not None and age < limit:
            return
        done = self._apt_get("update", check=False)
        if not done.ok:
            if age is None:
                raise failure_to_error(done.stdout + done.stderr, [])
            logger.warning(
                "openflash: refreshing apt's package index failed; using the one from "
                "%.0f s ago:\n%s",
                age,
                _subprocess.tail(done.stderr, 5),
            )
        else:
            # Our own mark: apt dates the index files as the server did, for If-Modified-Since.
            (self.root / "lists" / _REFRESHED).touch()

    def simulate(self, names: Sequence[str]) -> list[DebPackage]:
        """What installing ``names`` on the base system would add (empty: it has them all)."""
        self.ensure_index()
        done = self._apt_get("install", "-s", *_INSTALL_FLAGS, *names, check=False)
        if not done.ok and (self.index_age() or 0) > RECHECK_AFTER_S:
            self.ensure_index(max_age=RECHECK_AFTER_S)  # the package may be newer than the index
            done = self._apt_get("install", "-s", *_INSTALL_FLAGS, *names, check=False)
        if not done.ok:
            raise failure_to_error(done.stdout + done.stderr, names)
        return parse_simulation(done.stdout)

    def download(self, packages: Sequence[DebPackage]) -> list[Path]:
        """Download exactly these .debs into the private cache; their paths, in order."""
        missing = [p for p in packages if not (self.archives / p.filename).is_file()]
        pins = [p.pin for p in missing]
        if missing:
            self.ensure_index()  # another machine may have resolved them: this one needs an index
            done = self._apt_get(
                "install", "-y", "--download-only", *_INSTALL_FLAGS, *pins, check=False
            )
            if not done.ok:
                raise failure_to_error(done.stdout + done.stderr, pins)
        paths = [self.archives / p.filename for p in packages]
        absent = [p.name for p in paths if not p.is_file()]
        if absent:
            raise SystemDependencyError(
                f"apt did not download {absent}",
                hint="the package index may have changed meanwhile; call again",
            )
        return paths

    def install_on_host(self, names: Sequence[str]) -> None:
        """``apt-get install`` on the host itself (FLASH_SYSTEM_DEPS=host): root only."""
        if os.geteuid() != 0:
            raise SystemDependencyError(
                f"FLASH_SYSTEM_DEPS=host installs {list(names)} on this machine, which needs root",
                hint="run as root (e.g. in a disposable container), or unset FLASH_SYSTEM_DEPS to "
                "use cached layers, which need no root",
            )
        argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *names]
        done = _subprocess.run(argv, env=_apt_environ(), timeout=APT_TIMEOUT_S, check=False)
        if not done.ok and "Unable to locate" in done.stdout + done.stderr:
            _subprocess.run(
                ["apt-get", "update", "-q"], env=_apt_environ(), timeout=APT_TIMEOUT_S, check=False
            )
            done = _subprocess.run(argv, env=_apt_environ(), timeout=APT_TIMEOUT_S, check=False)
        if not done.ok:
            raise failure_to_error(done.stdout + done.stderr, names)

    def _apt_get(self, *args: str, check: bool) -> _subprocess.Completed:
        if shutil.which("apt-get") is None:
            raise SystemDependencyError(
                "system_dependencies need apt-get, which this machine does not have",
                hint="run on a Debian or Ubuntu machine, or drop system_dependencies",
            )
        done = self._run_apt_get(args, check=check and not self.proxy, direct=False)
        # apt-get update exits 0 after some failed fetches ("W: Failed to fetch"): asked again too.
        if self.proxy and _fetch_failed(done.stdout + done.stderr):
            logger.warning(
                "openflash: apt through the package cache %s failed; asking the archive "
                "directly:\n%s",
                self.proxy,
                _subprocess.tail(done.stderr, 5),
            )
            done = self._run_apt_get(args, check=check, direct=True)
        return done

    def _run_apt_get(
        self, args: tuple[str, ...], *, check: bool, direct: bool
    ) -> _subprocess.Completed:
        argv = ["apt-get", "-q", *self.options(direct=direct), *args]
        return _subprocess.run(
            argv,
            env=_apt_environ(),
            timeout=APT_TIMEOUT_S,
            check=check,
            error=SystemDependencyError,
        )


def _fetch_failed(output: str) -> bool:
    """Whether apt's ``output`` says a download failed (rather than, say, an unknown name)."""
    return any(
        words in output
        for words in ("Failed to fetch", "Could not connect", "Unable to connect", "Err:")
    )


def _apt_environ() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LC_ALL": "C", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive"})
    return env
