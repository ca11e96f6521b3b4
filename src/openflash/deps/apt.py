"""apt, run privately: its own package index, .deb cache and dpkg state, never the host's.

    FLASH_APT_DIR/ (default FLASH_HOME/apt)
      lists/      the private package index, refreshed by ``apt-get update`` when missing or stale
      archives/   downloaded .debs, shared by every layer build
      cache/      apt's binary caches
      state/      a copy of the base system's dpkg status (apt locks this directory, not the
                  host's /var/lib/dpkg)
      bare/       an empty dpkg status and its state: ``Apt.bare`` asks what a system with no
                  packages needs (the .debs an offline image build installs)

Nothing here changes the host: packages are only simulated and downloaded. Every call takes one
file lock, because apt refuses (rather than waits) when its own locks are taken; a lock of apt's
held by a process outside openflash (an apt-get left over or suspended) is waited for, told and
bounded by deps/apt_locks.py. What apt prints
is parsed by the pure functions of deps/apt_output.py (re-exported here).

On a Ray node, ``use_proxy`` sends the requests for the archives' hosts through the cluster
package cache (deps/package_cache.py): apt's own ``Acquire::http::Proxy::<host>``, so that apt
still verifies every file against the archive's signed index. A command that fails through the
proxy is run once more without it (the cache unreachable: the archive is asked directly).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from openflash import _subprocess
from openflash.deps.apt_locks import run_waiting
from openflash.deps.apt_output import (
    HOST,
    DebPackage,
    deb_filename,
    failure_to_error,
    http_hosts,
    parse_index_hashes,
    parse_simulation,
)
from openflash.envs.trust import check_levels, check_owner, make_dirs
from openflash.errors import SystemDependencyError

__all__ = [
    "Apt",
    "DebPackage",
    "VerifiedDeb",
    "deb_filename",
    "failure_to_error",
    "http_hosts",
    "parse_index_hashes",
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class VerifiedDeb:
    """A .deb in apt's cache and its SHA256 (hex), as checked against the package index."""

    path: Path
    sha256: str


class Apt:
    """Private apt for one FLASH_APT_DIR and one base system (a dpkg status file)."""

    def __init__(
        self, root: Path, base_status: Path, index_ttl: float, *, state: str = "state"
    ) -> None:
        self.root = root
        self.base_status = base_status
        self.index_ttl = index_ttl
        self.state = state
        #: The package cache's URL (http://host:port) apt's requests go through, or "".
        self.proxy = ""
        #: The archives' hosts whose requests go through ``proxy``.
        self.proxy_hosts: tuple[str, ...] = ()

    def use_proxy(self, url: str, hosts: tuple[str, ...]) -> None:
        """Send requests for ``hosts`` (archives' hosts, plain http) through the proxy at
        ``url`` (the cluster package cache); "" and () for none."""
        self.proxy, self.proxy_hosts = url, tuple(h for h in hosts if HOST.fullmatch(h))

    def repository_hosts(self) -> tuple[str, ...]:
        """The hosts of the plain-http archives this machine's apt sources name (() where there
        is no apt)."""
        if shutil.which("apt-get") is None:
            return ()
        argv = ["apt-get", *self.options(), "indextargets", "--no-release-info"]
        argv += ["--format", "$(REPO_URI)"]
        done = _subprocess.run(argv, env=_apt_environ(), timeout=60, check=False)
        return http_hosts(done.stdout) if done.ok else ()

    def bare(self) -> Apt:
        """This apt (its index and .deb cache) for a system with no packages at all: its
        closures are everything a package needs, whatever the base image holds."""
        status = self.root / "bare" / "status"
        if not status.is_file():
            make_dirs(status.parent)
            status.touch()
        bare = Apt(self.root, status, self.index_ttl, state="bare/state")
        bare.use_proxy(self.proxy, self.proxy_hosts)
        return bare

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    def options(self, *, direct: bool = False) -> list[str]:
        """apt's ``-o`` arguments: this folder's state and caches, and (unless ``direct``) the
        proxy for its hosts."""
        state = self.root / self.state
        options: dict[str, object] = {
            "Dir::State::Lists": self.root / "lists",
            "Dir::State::status": state / "status",
            "Dir::State::extended_states": state / "extended_states",
            "Dir::Cache": self.root / "cache",
            "Dir::Cache::archives": self.archives,
            # Debian's container images switch the binary cache off (docker-clean), and every
            # apt-cache call would parse the whole index again: keep ours (apt checks that it
            # is current, and writes it whole).
            "Dir::Cache::pkgcache": self.root / "cache" / "pkgcache.bin",
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
        check_levels(self.root, self.root)  # made 0700 if missing
        check_owner(self.root / "openflash.lock")  # before opening it: a link would be followed
        with FileLock(str(self.root / "openflash.lock"), mode=0o644):
            for sub in ("lists/partial", "archives/partial", "cache", self.state, "log"):
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
        target = self.root / self.state / "status"
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
        return [deb.path for deb in self.download_verified(packages)]

    def download_verified(self, packages: Sequence[DebPackage]) -> list[VerifiedDeb]:
        """``download``, with each .deb's SHA256 as ``verify`` read it (so that the
        unpacked-deb store need not read the .debs again)."""
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
        digests = self.verify(packages, paths)
        return [VerifiedDeb(path, digest) for path, digest in zip(paths, digests, strict=True)]

    def verify(self, packages: Sequence[DebPackage], paths: Sequence[Path]) -> list[str]:
        """Each .deb is this user's and has the SHA256 the package index apt used gives it;
        one that does not is removed and refused (SystemDependencyError naming it): nothing
        unverified is ever extracted. Their SHA256s (hex), in order."""
        for folder in (self.root / "lists", self.archives):
            check_levels(folder, self.root)
        lists = self.root / "lists"
        check_owner(*(p for p in lists.iterdir() if p.is_file() or p.is_symlink()))
        check_owner(*paths)
        if not packages:
            return []
        done = _subprocess.run(
            ["apt-cache", *self.options(), "show", *(p.pin for p in packages)],
            env=_apt_environ(),
            timeout=APT_TIMEOUT_S,
            check=False,
        )
        known = parse_index_hashes(done.stdout)
        digests = []
        for package, path in zip(packages, paths, strict=True):
            wanted = known.get(package, set())
            actual = _sha256(path)
            if actual not in wanted:
                path.unlink(missing_ok=True)
                said = ", ".join(sorted(wanted)) or "no SHA256 at all"
                raise SystemDependencyError(
                    f"{path} does not match apt's package index: its SHA256 is {actual}, the "
                    f"index gives {said} for {package.name} {package.version} ({package.arch}); "
                    "it was removed and nothing of it was extracted",
                    hint="call again to download it afresh; if it fails again, refresh the index "
                    f"(remove {self.root / 'lists'}: it is fetched again)",
                )
            digests.append(actual)
        return digests

    def install_on_host(self, names: Sequence[str]) -> None:
        """``apt-get install`` on the host itself (FLASH_SYSTEM_DEPS=host): root only."""
        if os.geteuid() != 0:
            raise SystemDependencyError(
                f"FLASH_SYSTEM_DEPS=host installs {list(names)} on this machine, which needs root",
                hint="run as root (e.g. in a disposable container), or unset FLASH_SYSTEM_DEPS to "
                "use cached layers, which need no root",
            )
        argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *names]
        update = ["apt-get", "update", "-q"]
        done = run_waiting(lambda: _host_apt(argv))
        if not done.ok and "Unable to locate" in done.stdout + done.stderr:
            run_waiting(lambda: _host_apt(update))
            done = run_waiting(lambda: _host_apt(argv))
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
        done = run_waiting(
            lambda: _subprocess.run(
                argv,
                env=_apt_environ(),
                timeout=APT_TIMEOUT_S,
                check=False,
                error=SystemDependencyError,
            )
        )
        if check and not done.ok:
            raise SystemDependencyError(
                f"`apt-get {' '.join(args[:2])}` failed with exit code {done.returncode}:\n"
                f"{_subprocess.tail(done.stderr or done.stdout)}",
                hint="read apt's output above",
            )
        return done


def _fetch_failed(output: str) -> bool:
    """Whether apt's ``output`` says a download failed (rather than, say, an unknown name)."""
    return any(
        words in output
        for words in ("Failed to fetch", "Could not connect", "Unable to connect", "Err:")
    )


def _host_apt(argv: list[str]) -> _subprocess.Completed:
    """apt on the host, never killed with this process: dpkg stopped half-way would leave the
    host's package database broken."""
    return _subprocess.run(
        argv, env=_apt_environ(), timeout=APT_TIMEOUT_S, check=False, die_with_caller=False
    )


def _apt_environ() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LC_ALL": "C", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive"})
    return env
