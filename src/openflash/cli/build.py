"""``flash build``: a deployable artifact in ``.flash/build/``.

    manifest.json              endpoints, functions, resource configs, locks, system packages
    locks/<endpoint>.txt       the pinned requirements (hashes included) each image installs
    dockerfiles/<endpoint>     one Dockerfile per endpoint
    app/                       the project's code
    openflash/                 openflash itself, to run the endpoint's server in the image
    wheelhouse/, debs/         with --wheelhouse: every wheel and .deb, so that images build
                               with the network off (wheelhouse.py)
    deps/                      for endpoints with a dockerImage: each lock, and openflash, staged
                               by uv (their images need neither pip nor an index)
    <project>.tar.gz           all of the above

An image is the endpoint's base (``python:X.Y-slim-<release>``, the Debian release its apt
pins were locked on, for CPU and GPU endpoints alike: envs/dockerfiles.py says why), its system
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
import re
import shlex
import shutil
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer

import openflash
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
from openflash.cli.wheelhouse import stage_debs, stage_wheels
from openflash.deps.apt import DebPackage
from openflash.deps.lockfile import LockedPackage, LockEntry, LockFile, find_lockfile
from openflash.deps.system import distribution_release
from openflash.envs.dockerfiles import (
    OFFLINE_APT,
    PORT,
    EndpointImage,
    endpoint_dockerfile,
    image_endpoint_dockerfile,
    python_base,
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
    release: str = ""  # that distribution (deps/system.py's ``debian-12``)

    def rendered(self, wheelhouse: bool = False) -> EndpointImage:
        """What envs/dockerfiles.py renders its Dockerfile from."""
        return EndpointImage(
            self.endpoint.name,
            self.base,
            tuple((p.name, p.version) for p in self.entry.system_packages),
            tuple(self.entry.system_dependencies),
            self.debian_pins,
            gpu=bool(self.endpoint.resource.gpu_count) and not self.endpoint.resource.cpu_instance,
            debs=self.apt and self.online_because(wheelhouse) is None,
        )

    @property
    def apt(self) -> bool:
        """Whether its Dockerfile installs system packages."""
        return bool(self.entry.system_packages or self.entry.system_dependencies)

    def online_because(self, wheelhouse: bool) -> str | None:
        """Why its image build needs the network, even with a wheelhouse; None if it does not."""
        if not wheelhouse:
            return "no --wheelhouse"
        if self.apt and self.endpoint.resource.image:
            return f"its apt step installs from the index of {self.base}"
        if self.apt and not self.debian_pins:
            return "its system packages were not locked on a Debian release the images know"
        if self.apt and self.release != distribution_release():
            return f"its .debs are {self.release}'s: run `flash build --wheelhouse` there"
        return None


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
    # .flash/ is 0700 whatever the umask: flash run refuses one others could write (its journal)
    out.parent.mkdir(mode=0o700, exist_ok=True)
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
            else endpoint_dockerfile(image.rendered(wheelhouse), wheelhouse=wheelhouse)
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
        names = [i.endpoint.name for i in images]
        staging: list[tuple[str, Callable[[], object]]] = [
            ("wheelhouse", lambda: stage_wheels(out, names))
        ]
        for i in images:
            if i.apt and i.online_because(wheelhouse) is None:
                staging.append(
                    (
                        f"{i.endpoint.name}: its .debs",
                        functools.partial(stage_debs, out, i.endpoint.name, i.entry, preparer.apt),
                    )
                )
        for (label, _), result in zip(staging, reporter.run(staging, parallel=1), strict=True):
            if isinstance(result, BaseException):
                fail(f"{label}: {result}", "an offline build needs every file; see the error", 1)
    manifest = _manifest(project, images)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    tarball = out / f"{project.root.name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for item in sorted(out.iterdir()):
            if item != tarball:
                tar.add(item, arcname=item.name)
    reporter.say(f"wrote {out}: {len(images)} Dockerfile(s), {tarball.name}")
    if not quiet:
        print(next_steps(project, out, images, wheelhouse=wheelhouse), end="", flush=True)


def next_steps(project: Project, out: Path, images: list[Image], *, wheelhouse: bool) -> str:
    """What to run with the artifact: build each image, run one, call it."""
    lines = ["", "Next, build the images (podman, or docker with the same arguments):"]
    for image in images:
        dockerfile = _shown(out / "dockerfiles" / image.endpoint.name)
        online = image.online_because(wheelhouse)
        lines.append(
            f"  podman build{'' if online else ' --network=none'} -f {dockerfile} "
            f"-t {_tag(project, image)} {_shown(out)}"
            + (f"   # needs the network: {online}" if online and wheelhouse else "")
        )
    first = images[0]
    gpu = " --device nvidia.com/gpu=all" if first.rendered().gpu else ""
    lines += [
        "then run one (it listens beyond loopback: choose an API key) and call it:",
        f"  podman run --rm{gpu} -p {PORT}:{PORT} -e FLASH_API_KEY=choose-a-key "
        f"{_tag(project, first)}",
    ]
    route = next((r.path for r in project.queue if r.endpoint_name == first.endpoint.name), None)
    if route is not None:
        lines.append(
            "  curl -H 'Authorization: Bearer choose-a-key' -H 'Content-Type: application/json' "
            f"-d '{{\"input\": {{}}}}' {shlex.quote(f'http://localhost:{PORT}{route}/runsync')}"
            "   # the function's parameters go in input"
        )
    if not wheelhouse:
        lines.append("To build them with the network off, run `flash build --wheelhouse` first.")
    return "\n".join(lines) + "\n"


def _tag(project: Project, image: Image) -> str:
    """An image name for the endpoint: lowercase letters, digits and dashes."""
    name = f"{project.root.name}-{image.endpoint.name}".lower()
    return re.sub(r"[^a-z0-9._-]+", "-", name).strip("-._") or "openflash-endpoint"


def _shown(path: Path) -> str:
    """``path`` as the user would type it: relative to here when it is below, quoted."""
    if path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    return shlex.quote(str(path))


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
    release = _lock_release(lockfile) or distribution_release()
    images = []
    for endpoint, result in zip(defs, results, strict=True):
        if isinstance(result, BaseException):
            fail(f"endpoint {endpoint.name!r} cannot be locked: {result}", "run `flash check`", 1)
        assert isinstance(result, LockEntry)
        images.append(_image(endpoint, result, release))
    return images


def _image(endpoint: EndpointDef, entry: LockEntry, release: str) -> Image:
    """The endpoint's image: FROM its own dockerImage, else the Python image of the Debian
    release its apt packages were locked on (pins kept only when that release is known)."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if endpoint.resource.image:
        return Image(endpoint, entry, endpoint.resource.image, debian_pins=False)
    base, pins = python_base(python, release)
    return Image(endpoint, entry, base, debian_pins=pins, release=release)


def _lock_release(lockfile: Path | None) -> str:
    """The distribution flash.lock's system packages were locked on ("" when it does not say,
    or there is none: then they are resolved here, on this machine's)."""
    if lockfile is None:
        return ""
    return LockFile.read(lockfile).release


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
        if OFFLINE_APT in text.splitlines():  # its .debs must hold the locked versions
            staged = {d.name for d in (out / "debs" / item["name"]).glob("*.deb")}
            problems += [
                f"{item['name']}: debs/{item['name']} lacks {p.filename} (locked)"
                for p in entry.system_packages
                if p.filename not in staged
            ]
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
