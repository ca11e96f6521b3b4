"""The pure parsers of apt's output, on outputs saved from apt 2.6 (Debian 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openflash.deps.apt import (
    DebPackage,
    deb_filename,
    failure_to_error,
    parse_index_hashes,
    parse_simulation,
)
from openflash.errors import SystemDependencyError

DATA = Path(__file__).parent / "data"


def saved(name: str) -> str:
    return (DATA / name).read_text()


def test_simulation_lists_the_closure_with_exact_versions() -> None:
    packages = parse_simulation(saved("apt-simulate-graphviz.txt"))
    names = [p.name for p in packages]
    assert "graphviz" in names and "libgvc6" in names and "libcgraph6" in names
    assert len(packages) == 10
    graphviz = next(p for p in packages if p.name == "graphviz")
    assert graphviz == DebPackage("graphviz", "2.42.2-7+deb12u1", "amd64")


def test_already_installed_means_an_empty_closure() -> None:
    assert parse_simulation(saved("apt-already.txt")) == []


def test_upgrades_and_foreign_architectures_are_part_of_the_closure() -> None:
    stdout = (
        "Inst libssl3 [3.0.11-1~deb12u2] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])\n"
        "Inst libc6:i386 (2.36-9+deb12u10 Debian:12.11/stable [i386])\n"
        "Conf libssl3 (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])\n"
    )
    assert parse_simulation(stdout) == [
        DebPackage("libssl3", "3.0.17-1~deb12u2", "amd64"),
        DebPackage("libc6", "2.36-9+deb12u10", "i386"),
    ]


def test_file_names_encode_the_epoch() -> None:
    assert (
        deb_filename("ffmpeg", "7:5.1.6-0+deb12u1", "amd64")
        == "ffmpeg_7%3a5.1.6-0+deb12u1_amd64.deb"
    )
    assert (
        DebPackage("wget", "1.21.3-1+deb12u1", "amd64").filename
        == "wget_1.21.3-1+deb12u1_amd64.deb"
    )


@pytest.mark.parametrize(
    ("sample", "name"),
    [("apt-unknown.txt", "nonexistent-pkg-xyz"), ("apt-unknown-version.txt", "ffmpeg")],
)
def test_unknown_packages_are_named_with_apts_message(sample: str, name: str) -> None:
    error = failure_to_error(saved(sample), [name])
    assert isinstance(error, SystemDependencyError)
    assert f"system package {name!r} is not known to apt" in error.message
    assert "E:" not in error.message and (
        "Unable to locate" in error.message or "was not found" in error.message
    )
    assert f"apt-cache policy {name}" in error.hint


def test_conflicts_quote_the_unmet_dependencies() -> None:
    error = failure_to_error(saved("apt-conflict.txt"), ["postfix", "exim4-daemon-light"])
    assert (
        "apt cannot install system_dependencies ['postfix', 'exim4-daemon-light']" in error.message
    )
    assert "exim4-config : Conflicts: postfix" in error.message
    assert "Unable to correct problems" in error.message


def test_index_hashes_are_read_per_package() -> None:
    hashes = parse_index_hashes(saved("apt-cache-show.txt"))
    jq = DebPackage("jq", "1.6-2.1+deb12u3", "amd64")
    assert hashes[jq] == {"c25f3fda201207ed98b1d63686f2d81b9dfeb99f1ab2d1d35fb3f7b6a1c107dc"}
    assert len(hashes) == 2 and all(len(h) == 1 for h in hashes.values())
    # A record without a SHA256 (dpkg's status of an installed package) gives none.
    assert parse_index_hashes("Package: bash\nVersion: 5.2\nArchitecture: amd64\n") == {}
