"""What apt prints, parsed: the packages a simulated install would add (``parse_simulation``),
the SHA256 the package index records for each (``parse_index_hashes``, from ``apt-cache show``),
the plain-http archives' hosts (``http_hosts``), and the error a failed apt-get means
(``failure_to_error``). Pure functions over apt's text output; deps/apt.py runs apt.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from openflash import _subprocess
from openflash.errors import SystemDependencyError

__all__ = [
    "HOST",
    "DebPackage",
    "deb_filename",
    "failure_to_error",
    "http_hosts",
    "parse_index_hashes",
    "parse_simulation",
]

_INST = re.compile(
    r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[(?P<old>[^\]]+)\] )?"
    r"\((?P<version>\S+) (?P<origin>.*?) ?\[(?P<arch>[^\]]+)\]\)"
)
HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
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


def http_hosts(repositories: str) -> tuple[str, ...]:
    """The hosts of the plain-http archives in ``apt-get indextargets --format '$(REPO_URI)'``'s
    output (one URI a line), sorted, each once: those an http proxy can serve."""
    hosts = set()
    for line in repositories.split():
        parts = urllib.parse.urlsplit(line.strip())
        if parts.scheme == "http" and parts.hostname and HOST.fullmatch(parts.hostname):
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
