"""The Backend protocol: where workers run.

A pool decides when a worker starts and stops; a backend knows how. ``start_worker`` returns a
handle with a byte stream to the worker (for the pool's frames), its identity, and the means to
kill it and learn how it ended. Backends know nothing of frames, calls or scaling.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Backend", "WorkerHandle", "WorkerSpec", "describe_exit"]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a backend needs to start one worker of an endpoint.

    A backend that builds environments where this process runs (local) uses ``python`` and
    ``runtime_path``; one whose workers run on other machines (Ray) builds there, from
    ``lock_text`` and ``system_lock``, the same versions everywhere.
    """

    endpoint: str
    python: Path | None
    runtime_path: Path | None
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    #: Path-like variables to prefix (a system layer's PATH, LD_LIBRARY_PATH, ...).
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)
    gpu_count: int = 0
    vcpus: int | None = None
    max_concurrency: int = 1
    #: The pinned requirements the environment holds, and its content key.
    lock_text: str = ""
    env_key: str = ""
    #: The resolved system layer (a deps.system.SystemLock), or None.
    system_lock: Any = None
    #: A cap on the worker's memory in bytes (FLASH_WORKER_MAX_RSS), or None.
    max_rss: int | None = None
    #: Modules a template imports before forking this endpoint's workers.
    preload: tuple[str, ...] = ()
    #: The folder the project's modules import from (put on the worker's path), or None.
    project: Path | None = None
    #: A fingerprint of the project's files when the functions import them (else ""): workers
    #: (and templates) of another fingerprint hold other versions of those modules.
    project_digest: str = ""
    #: An image to run each worker in, as a container (its ``dockerImage``, or the image
    #: derived from it with the endpoint's dependencies), and the Python to run there.
    image: str | None = None
    image_python: str = "python3"
    #: The instance type's memory, in GiB (containers are capped to it).
    memory_gib: int | None = None


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
