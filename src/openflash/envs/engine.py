"""The container engine (podman or docker) that runs endpoints with a ``dockerImage``.

Only this module runs the engine's commands, through ``_subprocess`` (argv lists, never a
shell); parsing what it prints is left to the small pure functions here. The engine is found once
per process: FLASH_CONTAINER_ENGINE names it (or a path to it); otherwise podman, else docker,
the first on PATH that answers ``info`` (a docker client without its daemon does not).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from openflash import _subprocess
from openflash.errors import FlashError

__all__ = ["Engine", "NoEngineError", "find_engine", "python_rule"]

KNOWN = ("podman", "docker")
INFO_TIMEOUT_S = 20.0
PULL_TIMEOUT_S = 1800.0
#: podman's default limits (1048576 files, 4194304 processes) cannot be set inside some
#: sandboxes; workers get this process's own file limit, and a process limit that can be.
NPROC_LIMIT = 4096


class NoEngineError(FlashError):
    """No container engine answered (the caller names the endpoint and the image)."""


@dataclass(frozen=True)
class Engine:
    """A working podman or docker."""

    path: str
    kind: str  # "podman" or "docker"

    def run_options(self) -> list[str]:
        """Options every ``run`` and ``build`` of ours passes (limits the engine can set)."""
        if self.kind != "podman":
            return []
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        hard = hard if hard != resource.RLIM_INFINITY else soft
        return [
            "--ulimit",
            f"nofile={min(soft, 1024)}:{hard}",
            "--ulimit",
            f"nproc={NPROC_LIMIT}:{NPROC_LIMIT}",
        ]

    def gpu_options(self, gpus: tuple[str, ...]) -> list[str]:
        """CDI devices for podman, ``--gpus`` for docker."""
        if not gpus:
            return []
        if self.kind == "podman":
            return [f"--device=nvidia.com/gpu={g}" for g in gpus]
        return ["--gpus", "device=" + ",".join(gpus)]

    def image_id(self, image: str, *, pull: bool = True) -> str | None:
        """The id of ``image`` here (pulled first if missing and ``pull``), or None."""
        found = _subprocess.run(
            [self.path, "image", "inspect", "--format", "{{.Id}}", image],
            check=False,
            timeout=INFO_TIMEOUT_S,
        )
        if found.ok and found.stdout.strip():
            return found.stdout.strip().splitlines()[0]
        if not pull:
            return None
        _subprocess.report(f"pulling {image}")
        _subprocess.run(
            [self.path, "pull", image],
            timeout=PULL_TIMEOUT_S,
            hint=f"check the image's name and that its registry is reachable ({self.kind} "
            "login for a private one), or build it locally",
        )
        return self.image_id(image, pull=False)

    def python_version(self, image: str) -> tuple[int, int] | None:
        """The (major, minor) of the image's ``python3``, or None when it has none."""
        done = _subprocess.run(
            [
                self.path,
                "run",
                "--rm",
                *self.run_options(),
                "--entrypoint",
                "python3",
                image,
                "-c",
                "import sys; print('%d.%d' % sys.version_info[:2])",
            ],
            check=False,
            timeout=120,
        )
        return parse_version(done.stdout) if done.ok else None

    def build(self, context: Path, tag: str) -> None:
        _subprocess.run(
            [self.path, "build", *self.run_options(), "--tag", tag, str(context)],
            timeout=PULL_TIMEOUT_S,
            hint="read the build's output above",
        )


def parse_version(text: str) -> tuple[int, int] | None:
    parts = text.strip().splitlines()[-1:] if text.strip() else []
    try:
        major, minor = (int(p) for p in parts[0].split("."))
    except (IndexError, ValueError):
        return None
    return major, minor


def python_rule(image: str, found: tuple[int, int] | None) -> str | None:
    """Why the image's Python cannot run this process's workers, or None when it can.

    The rule: the same major.minor as the caller's Python, since functions travel as pickled
    code objects, whose bytecode is only stable within one minor version.
    """
    here = sys.version_info[:2]
    if found is None:
        return f"the image {image!r} has no python3 on its PATH"
    if found != here:
        return (
            f"the image {image!r} has Python {found[0]}.{found[1]}, and this process runs "
            f"Python {here[0]}.{here[1]}: functions travel as pickled bytecode, which needs "
            "the same major.minor version on both sides"
        )
    return None


_found: dict[str | None, Engine | NoEngineError] = {}


def find_engine(setting: str | None) -> Engine:
    """The engine FLASH_CONTAINER_ENGINE names, or the first that answers; NoEngineError else."""
    cached = _found.get(setting)
    if cached is None:
        cached = _found[setting] = _find(setting)
    if isinstance(cached, NoEngineError):
        raise cached
    return cached


def _find(setting: str | None) -> Engine | NoEngineError:
    candidates = [setting] if setting else list(KNOWN)
    problems = []
    for name in candidates:
        path = (
            shutil.which(name)
            if os.sep not in name
            else (name if os.access(name, os.X_OK) else None)
        )
        if path is None:
            problems.append(f"{name}: not found")
            continue
        kind = "docker" if "docker" in os.path.basename(path) else "podman"
        info = _subprocess.run(
            [path, "info", "--format", "json"], check=False, timeout=INFO_TIMEOUT_S
        )
        if info.ok and _is_json(info.stdout):
            return Engine(path, kind)
        problems.append(f"{path}: `info` failed: {_subprocess.tail(info.stderr, 2)}")
    return NoEngineError("; ".join(problems))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
