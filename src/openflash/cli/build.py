"""``flash build``: a deployable artifact in ``.flash/build/``.

    manifest.json              endpoints, functions, resource configs, locks, system packages
    locks/<endpoint>.txt       the pinned requirements (hashes included) each image installs
    dockerfiles/<endpoint>     one Dockerfile per endpoint
    app/                       the project's code
    openflash/                 openflash itself, to run the endpoint's server in the image
    wheelhouse/                with --wheelhouse: every wheel, so that images build offline
    deps/                      for endpoints with a dockerImage: each lock, and openflash, staged
                               by uv (their images need neither pip nor an index)
    <project>.tar.gz           all of the above

An image is the endpoint's base (python:X.Y-slim for CPU, a CUDA runtime for GPU), its system
packages from apt, its lock synced with uv into /opt/flash/env, and ``flash run --only
<endpoint>`` as the entry point, using that environment as it is. An endpoint with its own
dockerImage starts FROM it, with the lines its local workers' derived image is built from
(its lock and openflash staged in ``deps/`` by image_build.py). Every Dockerfile is rendered by
envs/dockerfiles.py; every lock comes from the preparer.
"""

from __future__ import annotations

import functools
import importlib
import json
import shutil
import sys
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer

import openflash
from openflash import _subprocess
from openflash.cli.common import (
    Quiet,
    Reporter,
    Verbose,
    console,
    endpoint_defs,
    fail,
    load_project,
)
from openflash.cli.image_build import stage_image_endpoint, stage_openflash
from openflash.deps.apt import DebPackage
from openflash.deps.lockfile import LockedPackage, LockEntry, find_lockfile
from openflash.deps.system import distribution_release
from openflash.envs.dockerfiles import (
    CUDA_BASE,
    EndpointImage,
    endpoint_dockerfile,
    image_endpoint_dockerfile,
    uv_version,
)
from openflash.envs.dockerfiles import check_dockerfile as check_text
from openflash.prepare import Preparer
from openflash.project import Project, project_files
from openflash.runtime.definitions import EndpointDef

__all__ = ["build", "check_dockerfile"]


@dataclass(frozen=True)
class Image:
    endpoint: EndpointDef
    entry: LockEntry
    base: str
    debian_pins: bool  # whether the base is the distribution the system packages were locked on

    def rendered(self) -> EndpointImage:
        """What envs/dockerfiles.py renders its Dockerfile from."""
        return EndpointImage(
            self.endpoint.name,
            self.base,
            tuple((p.name, p.version) for p in self.entry.system_packages),
            tuple(self.entry.system_dependencies),
            self.debian_pins,
        )


def build(
    path: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    wheelhouse: Annotated[
        bool, typer.Option(help="Download every wheel into the artifact, for offline image builds.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Fail if a Dockerfile installs anything not in the lock."),
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write .flash/build/: a manifest, a Dockerfile per endpoint, the code, and a tarball.

    Example: flash build --wheelhouse
    """
    project = load_project(path)
    out = project.root / ".flash" / "build"
    if check:
        problems = _check_existing(out)
        for problem in problems:
            console.print(f"[red]error:[/red] {problem}")
        if not problems and not quiet:
            console.print("[green]every Dockerfile installs exactly its lock[/green]")
        raise typer.Exit(1 if problems else 0)
    reporter = Reporter(quiet=quiet, verbose=verbose)
    preparer = Preparer()
    images = _locked_images(project, reporter, preparer)
    if out.exists():
        shutil.rmtree(out)
    (out / "locks").mkdir(parents=True)
    (out / "dockerfiles").mkdir()
    _copy_project(project, out / "app")
    _copy_openflash(out / "openflash")
    in_images = [i for i in images if i.endpoint.resource.image]
    for image in images:
        (out / "locks" / f"{image.endpoint.name}.txt").write_text(image.entry.lock_text())
        (out / "dockerfiles" / image.endpoint.name).write_text(
            image_endpoint_dockerfile(
                image.endpoint.name,
                image.base,
                tuple(image.entry.system_dependencies),
                image.entry.lock_text(),
            )
            if image in in_images
            else endpoint_dockerfile(image.rendered(), wheelhouse=wheelhouse)
        )
    if in_images:
        uv_cache = preparer.settings.uv_cache_dir
        reporter.run(
            [
                (
                    f"{i.endpoint.name}: its lock for {i.base}",
                    lambda i=i: stage_image_endpoint(out, i.entry.lock_text(), uv_cache),
                )
                for i in in_images
            ]
            + [("openflash for the image endpoints", lambda: stage_openflash(out, uv_cache))],
            parallel=1,
        )
    if wheelhouse:
        reporter.run([("wheelhouse", lambda: _wheelhouse(out, images))], parallel=1)
    manifest = _manifest(project, images)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    tarball = out / f"{project.root.name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for item in sorted(out.iterdir()):
            if item != tarball:
                tar.add(item, arcname=item.name)
    reporter.say(f"wrote {out}: {len(images)} Dockerfile(s), {tarball.name}")


def _locked_images(project: Project, reporter: Reporter, preparer: Preparer) -> list[Image]:
    """Every endpoint with its lock: flash.lock's where it matches, else resolved now."""
    lockfile = find_lockfile(project.root)
    defs = endpoint_defs(project)

    def lock_for(endpoint: EndpointDef) -> LockEntry:
        key = preparer.dependency_key(
            endpoint.dependencies,
            endpoint.system_dependencies,
            lockfile,
            options=endpoint.options,
            gpu_imports=endpoint.gpu_imports,
            imports=endpoint.imports,
            gpu=endpoint.wants_gpu,
            project_lock=endpoint.uv_lock,
        )
        return preparer.entry_for(endpoint.name, key)

    results = reporter.run([(d.name, functools.partial(lock_for, d)) for d in defs])
    images = []
    for endpoint, result in zip(defs, results, strict=True):
        if isinstance(result, BaseException):
            fail(f"endpoint {endpoint.name!r} cannot be locked: {result}", "run `flash check`", 1)
        assert isinstance(result, LockEntry)
        images.append(_image(endpoint, result))
    return images


def _image(endpoint: EndpointDef, entry: LockEntry) -> Image:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    resource = endpoint.resource
    if resource.image:
        return Image(endpoint, entry, resource.image, debian_pins=False)
    if resource.gpu_count:
        return Image(endpoint, entry, CUDA_BASE, debian_pins=False)
    slim = f"python:{python}-slim"
    # python:X.Y-slim is Debian; pin apt versions when it is the release they were locked on.
    return Image(endpoint, entry, slim, debian_pins=distribution_release().startswith("debian-"))


def check_dockerfile(text: str, lock_text: str, entry: LockEntry) -> list[str]:
    """What a Dockerfile installs beyond its lock (envs/dockerfiles.py), against ``entry``."""
    allowed = {p.name for p in entry.system_packages} | set(entry.system_dependencies)
    return check_text(
        text, lock_text, locked_text=entry.lock_text(), apt_allowed=frozenset(allowed)
    )


def _check_existing(out: Path) -> list[str]:
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        fail(f"{out} holds no build", "run `flash build` first, then `flash build --check`")
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for item in manifest["endpoints"]:
        entry = LockEntry(
            [item["name"]],
            tuple(item["dependencies"]),
            tuple(item["system_dependencies"]),
            [_locked(p) for p in item["packages"]],
            [_deb(p) for p in item["system_packages"]],
        )
        text = (out / item["dockerfile"]).read_text()
        lock_text = (out / item["lock"]).read_text()
        problems += [f"{item['name']}: {p}" for p in check_dockerfile(text, lock_text, entry)]
    return problems


def _locked(item: dict[str, Any]) -> LockedPackage:
    return LockedPackage(item["name"], item["version"], tuple(item["hashes"]))


def _deb(item: dict[str, Any]) -> DebPackage:
    return DebPackage(item["name"], item["version"], item["arch"])


def _manifest(project: Project, images: list[Image]) -> dict[str, Any]:
    endpoints = []
    for image in images:
        e = image.endpoint
        functions = [r.path for r in project.queue if r.endpoint_name == e.name]
        functions += [f"{r.method} {r.path}" for r in project.lb if r.endpoint_name == e.name]
        endpoints.append(
            {
                "name": e.name,
                "routes": functions,
                "resource": {
                    "class": type(e.resource).__name__,
                    **e.resource.model_dump(mode="json", exclude_none=True),
                },
                "max_concurrency": e.max_concurrency,
                "dependencies": list(e.dependencies),
                "system_dependencies": list(e.system_dependencies),
                "packages": [
                    {"name": p.name, "version": p.version, "hashes": list(p.hashes)}
                    for p in image.entry.packages
                ],
                "system_packages": [
                    {"name": p.name, "version": p.version, "arch": p.arch}
                    for p in image.entry.system_packages
                ],
                "base": image.base,
                "lock": f"locks/{e.name}.txt",
                "dockerfile": f"dockerfiles/{e.name}",
            }
        )
    return {
        "openflash": openflash.__version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "project": project.root.name,
        "endpoints": endpoints,
    }


def _copy_project(project: Project, target: Path) -> None:
    for file in project_files(project.root):
        dest = target / file.relative_to(project.root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, dest)
    for extra in ("flash.lock", "pyproject.toml"):
        if (project.root / extra).is_file():
            shutil.copy2(project.root / extra, target / extra)


def _copy_openflash(target: Path) -> None:
    """openflash's own packages and a pyproject naming its dependencies, installable with uv."""
    for package in ("openflash", "runpod_flash"):
        init = importlib.import_module(package).__file__
        assert init is not None  # both are regular packages
        source = Path(init).parent
        shutil.copytree(
            source, target / "src" / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    requires = [r for r in metadata.requires("openflash") or [] if "extra ==" not in r]
    (target / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "openflash"\nversion = "{openflash.__version__}"\n'
        f"dependencies = {json.dumps(requires)}\n\n"
        '[project.scripts]\nflash = "openflash.cli:main"\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["src/openflash", "src/runpod_flash"]\n'
    )


def _wheelhouse(out: Path, images: list[Image]) -> None:
    """Every wheel the images install (the locks, openflash's dependencies, uv, hatchling)."""
    house = out / "wheelhouse"
    house.mkdir(exist_ok=True)
    for image in images:
        _subprocess.report(f"downloading the wheels of {image.endpoint.name}")
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
                str(out / "locks" / f"{image.endpoint.name}.txt"),
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
