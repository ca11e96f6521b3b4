"""``flash build --wheelhouse``: everything an image installs, in its build context.

    wheelhouse/          every wheel: each lock's, openflash's dependencies, uv, hatchling
    debs/<endpoint>/     the .debs of the endpoint's system packages, with everything they
                         need on a system with no packages (``Apt.bare``): the Dockerfile
                         installs those its base lacks, from these files, without an index

With both, ``podman build --network=none`` (or ``docker build --network=none``) builds the
image: nothing is downloaded, Python included (the base is a Python image).
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

from openflash import _subprocess
from openflash.deps.apt import Apt
from openflash.deps.lockfile import LockEntry
from openflash.envs.dockerfiles import uv_version

__all__ = ["stage_debs", "stage_wheels"]


def stage_wheels(out: Path, endpoints: list[str]) -> None:
    """Every wheel the images install: the locks ``out/locks/<endpoint>.txt``, openflash's
    dependencies, uv and hatchling (which builds openflash from its source in the image)."""
    house = out / "wheelhouse"
    house.mkdir(exist_ok=True)
    for name in endpoints:
        _subprocess.report(f"downloading the wheels of {name}")
        _subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--require-hashes",
                "-d",
                str(house),
                "-r",
                str(out / "locks" / f"{name}.txt"),
            ],
            timeout=3600,
        )
    requires = [r for r in metadata.requires("openflash") or [] if "extra ==" not in r]
    _subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--only-binary",
            ":all:",
            "-d",
            str(house),
            f"uv=={uv_version()}",
            "hatchling",
            *requires,
        ],
        timeout=3600,
    )


def stage_debs(out: Path, name: str, entry: LockEntry, apt: Apt) -> int:
    """The .debs endpoint ``name`` installs, into ``out/debs/<name>``: its locked packages at
    their locked versions and the rest of their closure on a bare system. How many."""
    locked = {p.name for p in entry.system_packages}
    wanted = [p.pin for p in entry.system_packages] + [
        n for n in entry.system_dependencies if n not in locked
    ]
    if not wanted:
        return 0
    bare = apt.bare()
    with bare.locked():
        packages = bare.simulate(wanted)
        paths = bare.download(packages)
    target = out / "debs" / name
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy2(path, target / path.name)
    return len(paths)
