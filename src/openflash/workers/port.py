"""The Backend protocol: where workers run.

A pool decides when a worker starts and stops; a backend knows how. ``start_worker`` returns a
handle with a byte stream to the worker (for the pool's frames), its identity, and the means to
kill it and learn how it ended. Backends know nothing of frames, calls or scaling.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["Backend", "Target", "WorkerHandle", "WorkerSpec", "describe_exit"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how one backend runs a worker: the part of a ``WorkerSpec`` that differs by
    backend (a local process's interpreter, a container's image, what a Ray node builds from).

    The kinds live with the backends that run them (``openflash.backends.targets``), above this
    port: the pool passes a target through untouched, and a Ray target holds a resolved system
    layer (``deps``), which this layer may not import. A backend given a kind it does not run
    says so (a bug in whoever chose the backend).
    """


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a backend needs to start one worker of an endpoint.

    The fields are what the pool and the backends share: where the worker runs its functions
    from, what it sees, what it may use. A backend honours those its workers can (the local
    backend all of them; containers ignore ``paths`` and ``preload``, which need the host's
    processes; Ray ignores ``paths``, ``preload`` and ``max_rss``, ships ``project``, and builds
    its own layer's paths on the node). ``target`` is what only its own backend reads.
    """

    endpoint: str
    #: The backend-specific rest: a LocalTarget, ContainerTarget or RayTarget (backends.targets).
    target: Target
    #: The working directory of the worker's functions.
    cwd: Path
    #: Variables set for the worker (the endpoint's ``env``, and a system layer's variables).
    env: dict[str, str] = field(default_factory=dict)
    #: Path-like variables to prefix (a system layer's PATH, LD_LIBRARY_PATH, ...).
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The system layer's folder on this machine (None: no layer), overlaid at its real paths
    #: where workers run in a namespace (the local backend; others ignore it).
    layer: Path | None = None
    #: The folder of its volume (NetworkVolume), seen at /runpod-volume where workers run in a
    #: namespace, else named by FLASH_VOLUME_PATH (None: no volume).
    volume: Path | None = None
    gpu_count: int = 0
    #: The GPU types it may run on, in priority order (GpuGroup/GpuType values, backends/
    #: gpu_types.py); () for any GPU.
    gpu_types: tuple[str, ...] = ()
    #: The instance type's vCPUs (the worker is pinned or capped to them), or None: no limit.
    vcpus: int | None = None
    #: The instance type's memory, in GiB (containers are capped to it), or None.
    memory_gib: int | None = None
    max_concurrency: int = 1
    #: A cap on the worker's memory in bytes (FLASH_WORKER_MAX_RSS), or None.
    max_rss: int | None = None
    #: Modules a template imports before forking this endpoint's workers.
    preload: tuple[str, ...] = ()
    #: The folder the project's modules import from (put on the worker's path), or None.
    project: Path | None = None
    #: A fingerprint of the project's files when the functions import them (else ""): workers
    #: (and templates) of another fingerprint hold other versions of those modules.
    project_digest: str = ""
    #: The file of modules its workers imported during their first calls (learned preload,
    #: envs/preload_records.py), or None: a template started later preloads them too.
    learned_preload: Path | None = None


class WorkerHandle(Protocol):
    pid: int
    #: Where it runs, as its backend names the machine.
    node: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: The accelerators this worker holds, as the backend names them (e.g. "0", "1").
    gpus: tuple[str, ...]

    def kill(self) -> None:
        """Kill the worker and everything it started, at once."""

    async def wait(self) -> int:
        """The exit status, as ``subprocess`` reports it (negative: killed by that signal)."""

    def stderr_tail(self) -> str:
        """The last lines the worker wrote to stderr."""


class Backend(Protocol):
    """Starts workers. A backend may also have ``start_overdue(spec) -> str | None``: told that
    a start of ``spec``'s worker ran past the pool's start timeout before a worker existed, it
    gives up what that start waited on and says what it was (a phrase naming its pid)."""

    #: Whether workers use environments built by this process (else they build their own).
    builds_locally: bool

    async def start_worker(self, spec: WorkerSpec) -> WorkerHandle: ...

    async def close(self) -> None: ...


def describe_exit(returncode: int | None) -> str:
    """``exit code 3``, ``signal 9 (SIGKILL)``, or ``unknown status``."""
    import signal

    if returncode is None:
        return "unknown status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"
