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
file lock, because apt refuses (rather than waits) when its own locks are taken. What apt prints
is parsed by the pure functions ``parse_simulation`` and ``failure_to_error``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from openflash import _subprocess
from openflash.envs.trust import check_levels, check_owner, make_dirs
from openflash.errors import SystemDependencyError

__all__ = [
    "Apt",
    "DebPackage",
    "deb_filename",
    "failure_to_error",
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

_INST = re.compile(
    r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[(?P<old>[^\]]+)\] )?"
    r"\((?P<version>\S+) (?P<origin>.*?) ?\[(?P<arch>[^\]]+)\]\)"
)
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


def parse_index_hashes(stdout: str) -> dict[DebPackage, set[str]]:
    """The SHA256 of each package record ``apt-cache show`` printed (a version several
    sources have may be listed more than once)."""
    hashes: dict[DebPackage, set[str]] = {}
    for record in stdout.split("\n\n"):
        fields: dict[str, str] = {}
        for line in record.splitlines():
            name, sep, value = line.partition(":")
            if sep and not line.startswith(" "):
                fields[name] = value.strip()
        if {"Package", "Version", "Architecture", "SHA256"} <= fields.keys():
            package = DebPackage(fields["Package"], fields["Version"], fields["Architecture"])
            hashes.setdefault(package, set()).add(fields["SHA256"].lower())
    return hashes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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

    def __init__(
        self, root: Path, base_status: Path, index_ttl: float, *, state: str = "state"
    ) -> None:
        self.root = root
        self.base_status = base_status
        self.index_ttl = index_ttl
        self.state = state

    def bare(self) -> Apt:
        """This apt (its index and .deb cache) for a system with no packages at all: its
        closures are everything a package needs, whatever the base image holds."""
        status = self.root / "bare" / "status"
        if not status.is_file():
            make_dirs(status.parent)
            status.touch()
        return Apt(self.root, status, self.index_ttl, state="bare/state")

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    def options(self) -> list[str]:
        state = self.root / self.state
        options = {
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
        self.verify(packages, paths)
        return paths

    def verify(self, packages: Sequence[DebPackage], paths: Sequence[Path]) -> None:
        """Each .deb is this user's and has the SHA256 the package index apt used gives it;
        one that does not is removed and refused (SystemDependencyError naming it): nothing
        unverified is ever extracted."""
        for folder in (self.root / "lists", self.archives):
            check_levels(folder, self.root)
        lists = self.root / "lists"
        check_owner(*(p for p in lists.iterdir() if p.is_file() or p.is_symlink()))
        check_owner(*paths)
        if not packages:
            return
        done = _subprocess.run(
            ["apt-cache", *self.options(), "show", *(p.pin for p in packages)],
            env=_apt_environ(),
            timeout=APT_TIMEOUT_S,
            check=False,
        )
        known = parse_index_hashes(done.stdout)
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
        argv = ["apt-get", "-q", *self.options(), *args]
        return _subprocess.run(
            argv,
            env=_apt_environ(),
            timeout=APT_TIMEOUT_S,
            check=check,
            error=SystemDependencyError,
        )


def _apt_environ() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LC_ALL": "C", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive"})
    return env
