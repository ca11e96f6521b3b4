"""``flash.lock``: the project's resolved dependency sets, so that nothing drifts silently.

    version = 1
    python = "cpython-3.11.7"
    platform = "cp311-cp311-manylinux_2_36_x86_64"
    release = "debian-12"          # the distribution the system packages were locked on

    [[environments]]
    endpoints = ["deps_data_science"]
    dependencies = ["numpy==1.26.2", "pandas==2.1.3", "scipy>=1.11.0", "matplotlib"]
    system_dependencies = []
    packages = [{ name = "numpy", version = "1.26.2", hashes = ["sha256:..."] }, ...]
    system_packages = [{ name = "libgvc6", version = "2.42.2-7+deb12u1", arch = "amd64" }]

One entry per distinct (dependencies, system_dependencies) pair, listing the endpoints that use
it. Runs and builds look an endpoint's sets up here: a match is installed exactly as locked (with
hash checking); an endpoint whose specs changed since ``flash lock`` is reported as stale.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from openflash.deps.apt import DebPackage
from openflash.deps.dependency_key import DependencyKey
from openflash.errors import DependencyError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["LOCK_NAME", "LockEntry", "LockFile", "LockedPackage", "find_lockfile", "parse_hashed"]

LOCK_NAME = "flash.lock"
FORMAT = 1


@dataclass(frozen=True)
class LockedPackage:
    name: str
    #: ``1.2.3`` for an index release, or the URL of a direct reference.
    version: str
    hashes: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """A requirement line for ``uv pip sync``, with its hashes."""
        pin = (
            f"{self.name} @ {self.version}"
            if "://" in self.version
            else f"{self.name}=={self.version}"
        )
        return " ".join([pin, *(f"--hash={h}" for h in self.hashes)])


@dataclass
class LockEntry:
    endpoints: list[str]
    dependencies: tuple[str, ...]
    system_dependencies: tuple[str, ...]
    packages: list[LockedPackage] = field(default_factory=list)
    system_packages: list[DebPackage] = field(default_factory=list)

    @property
    def key(self) -> DependencyKey:
        """The sets this entry pins (its ``lockfile`` is None: the entry is the lock)."""
        return DependencyKey(self.dependencies, self.system_dependencies)

    def lock_text(self) -> str:
        """The pinned lines ``uv pip sync`` installs, hashes included, sorted."""
        return "".join(f"{p.requirement}\n" for p in sorted(self.packages, key=lambda p: p.name))


@dataclass
class LockFile:
    path: Path
    python: str
    platform: str
    entries: list[LockEntry] = field(default_factory=list)
    #: The distribution ``system_packages`` were locked on (``debian-12``); "" when not recorded.
    release: str = ""

    def find(self, dependencies: tuple[str, ...], system: tuple[str, ...]) -> LockEntry | None:
        for entry in self.entries:
            if entry.key == DependencyKey(dependencies, system):
                return entry
        return None

    def stale(
        self, endpoint: str, dependencies: tuple[str, ...], system: tuple[str, ...]
    ) -> LockEntry | None:
        """The entry that locks ``endpoint`` with other specs than it now has, if any."""
        for entry in self.entries:
            if endpoint in entry.endpoints and entry.key != DependencyKey(dependencies, system):
                return entry
        return None

    @classmethod
    def read(cls, path: Path) -> LockFile:
        try:
            data = tomllib.loads(path.read_text())
            if data.get("version") != FORMAT:
                raise ValueError(f"format version {data.get('version')!r}, expected {FORMAT}")
            entries = [_entry(item) for item in data.get("environments", [])]
            return cls(
                path,
                str(data["python"]),
                str(data["platform"]),
                entries,
                str(data.get("release", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DependencyError(
                f"{path} cannot be read: {e}",
                hint="run `flash lock` to write it again",
            ) from e

    def write(self) -> None:
        document: dict[str, Any] = {
            "version": FORMAT,
            "python": self.python,
            "platform": self.platform,
            **({"release": self.release} if self.release else {}),
            "environments": [
                {
                    "endpoints": sorted(e.endpoints),
                    "dependencies": list(e.dependencies),
                    "system_dependencies": list(e.system_dependencies),
                    "packages": [
                        {"name": p.name, "version": p.version, "hashes": list(p.hashes)}
                        for p in sorted(e.packages, key=lambda p: p.name)
                    ],
                    "system_packages": [
                        {"name": p.name, "version": p.version, "arch": p.arch}
                        for p in e.system_packages
                    ],
                }
                for e in sorted(self.entries, key=lambda e: (sorted(e.endpoints), e.key))
            ],
        }
        header = "# Written by `flash lock`; `flash run` and `flash build` install exactly this.\n"
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(header + tomli_w.dumps(document))
        tmp.replace(self.path)


def _entry(item: dict[str, Any]) -> LockEntry:
    return LockEntry(
        endpoints=[str(e) for e in item["endpoints"]],
        dependencies=tuple(str(d) for d in item["dependencies"]),
        system_dependencies=tuple(str(d) for d in item.get("system_dependencies", [])),
        packages=[
            LockedPackage(str(p["name"]), str(p["version"]), tuple(p.get("hashes", [])))
            for p in item.get("packages", [])
        ],
        system_packages=[
            DebPackage(str(p["name"]), str(p["version"]), str(p["arch"]))
            for p in item.get("system_packages", [])
        ],
    )


def find_lockfile(start: Path) -> Path | None:
    """The nearest ``flash.lock`` in ``start`` or above it."""
    for folder in [start, *start.parents]:
        candidate = folder / LOCK_NAME
        if candidate.is_file():
            return candidate
    return None


def parse_hashed(stdout: str) -> list[LockedPackage]:
    """The packages of ``uv pip compile --generate-hashes`` output."""
    packages = []
    text = stdout.replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        hashes = tuple(p[len("--hash=") :] for p in parts if p.startswith("--hash="))
        spec = " ".join(p for p in parts if not p.startswith("--hash="))
        if " @ " in spec:
            name, _, url = spec.partition(" @ ")
            packages.append(LockedPackage(name.strip(), url.strip(), hashes))
        else:
            name, _, version = spec.partition("==")
            packages.append(LockedPackage(name.strip(), version.strip(), hashes))
    return packages
