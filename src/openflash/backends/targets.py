"""The kinds of ``Target`` (workers/port.py): what each backend needs besides the common spec.

``LocalTarget``: a process of an environment built on this machine (the local backend).
A ``RayTarget`` with an ``image`` is a container of that image derived on its node.
``ContainerTarget``: a container of an image, on this machine (the local backend, with an
engine). ``RayTarget``: an actor on a Ray node, which builds the environment and the system layer
in its own store from what was resolved here, so every node runs the same versions.

They live here, not in the port, because a Ray target carries a resolved system layer
(``deps.system.SystemLock``) and ``workers/`` sits below ``deps/``; and not in backends/ray.py,
so that choosing a target never imports Ray. The runtime builds them; each backend reads its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openflash.deps.system import SystemLock
from openflash.envs.uv_options import NO_OPTIONS, UvOptions
from openflash.workers.port import Target

__all__ = ["ContainerTarget", "LocalTarget", "RayTarget", "WorkerTarget"]


@dataclass(frozen=True, slots=True)
class LocalTarget(Target):
    """A worker process of an environment on this machine."""

    #: The environment's interpreter (``<env>/bin/python``).
    python: Path
    #: openflash's worker runtime (the bundle put on the worker's path, envs/bundle.py).
    runtime_path: Path


@dataclass(frozen=True, slots=True)
class ContainerTarget(Target):
    """A worker in a container of ``image`` (its ``dockerImage``, or the image derived from it
    with the endpoint's dependencies), run by ``python`` there; the runtime is mounted in."""

    image: str
    python: str
    #: openflash's worker runtime on this machine, mounted read-only at the same path.
    runtime_path: Path


@dataclass(frozen=True, slots=True)
class RayTarget(Target):
    """A worker on a Ray node, which builds what it runs in from these (the same versions
    everywhere)."""

    #: The pinned requirements the environment holds, and its content key.
    lock_text: str
    env_key: str
    #: The resolved system layer, or None.
    system_lock: SystemLock | None = None
    #: An image endpoint's image (its ``dockerImage``): the node derives it with the lock and
    #: ``image_system`` (apt packages installed in the image) and runs containers of it.
    image: str | None = None
    image_system: tuple[str, ...] = ()
    #: The install options the lock was resolved with (index URLs, find-links, build flags):
    #: the node installs with them too. Index credentials travel inside; their repr is redacted.
    options: UvOptions = NO_OPTIONS

    @property
    def layer_key(self) -> str:
        """The system layer's content key ("" for none)."""
        return self.system_lock.key if self.system_lock is not None else ""


#: Every kind a backend of openflash runs.
WorkerTarget = LocalTarget | ContainerTarget | RayTarget
