"""Workers as containers of an endpoint's image (its ``dockerImage``), on this machine.

A worker is ``<engine> run --rm -i --init IMAGE`` running the image's own Python (or the
environment the derived image holds) on ``python -m openflash.workers.child stdio``: frames go
over the container's stdin and stdout, its prints and errors come out on stderr, prefixed with
the endpoint. openflash's worker runtime and the project's folder are mounted read-only at the
same paths as here, so that tracebacks and nested calls name the files the caller knows.

The endpoint's ``env`` passes by name (``-e KEY``, the value in the engine's environment, never
in its argv); GPUs as CDI devices (podman) or ``--gpus`` (docker); the instance type's vCPUs and
memory as ``--cpus`` and ``--memory``; the endpoint's volume (``NetworkVolume(name=...)``, its
folder here) read-write at ``/runpod-volume``, named by ``FLASH_VOLUME_PATH`` as in local
workers. A container is removed when its worker exits or is killed; its exit status is reported
like a process's (128+N: killed by signal N).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable

from openflash.backends.output import OUTPUT_LINE_LIMIT, PUMP_GRACE_S, STDERR_TAIL_LINES, pump
from openflash.backends.targets import ContainerTarget
from openflash.backends.worker_view import VOLUME_MOUNT, VOLUME_VARIABLE
from openflash.envs.engine import Engine
from openflash.errors import FlashError
from openflash.workers.port import WorkerSpec

__all__ = ["ContainerWorker", "container_argv", "start_container"]

#: Variables a worker in a container gets besides its endpoint's env (the image sets the rest).
_PASSED = ("TZ", "LANG", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy")


def container_argv(
    engine: Engine, spec: WorkerSpec, name: str, gpus: tuple[str, ...]
) -> tuple[list[str], dict[str, str]]:
    """The ``run`` command of one worker (``spec.target`` a ContainerTarget), and the environment
    the engine runs with."""
    target = _target(spec)
    runtime = str(target.runtime_path)
    mounts = [runtime]
    paths = [runtime]
    if spec.project is not None:
        mounts.append(str(spec.project))
        paths.append(str(spec.project))
    cwd = str(spec.cwd)
    if not any(cwd == m or cwd.startswith(m + os.sep) for m in mounts):
        mounts.append(cwd)
    variables = {
        **{k: os.environ[k] for k in _PASSED if k in os.environ},
        **spec.env,
        "PYTHONPATH": os.pathsep.join(paths),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENFLASH_ENDPOINT": spec.endpoint,
    }
    volume = []
    if spec.volume is not None:  # read-write, at Runpod's path, as in a local worker's namespace
        volume.append(f"--volume={spec.volume}:{VOLUME_MOUNT}")
        variables[VOLUME_VARIABLE] = VOLUME_MOUNT
    if spec.max_rss:
        variables["OPENFLASH_MAX_RSS"] = str(spec.max_rss)
    argv = [
        engine.path,
        "run",
        "--rm",
        "--interactive",
        "--init",
        "--name",
        name,
        "--label",
        f"openflash.endpoint={spec.endpoint}",
        *engine.run_options(),
        *engine.gpu_options(gpus),
        *(f"--volume={m}:{m}:ro" for m in mounts),
        *volume,
        f"--workdir={cwd}",
        *(f"--env={k}" for k in sorted(variables)),
    ]
    if spec.vcpus:
        argv.append(f"--cpus={spec.vcpus}")
    if spec.memory_gib:
        argv.append(f"--memory={spec.memory_gib}g")
    argv += [
        "--entrypoint",
        target.python,
        target.image,
        "-m",
        "openflash.workers.child",
        "stdio",
        str(spec.max_concurrency),
    ]
    environ = {"PATH": os.environ.get("PATH", os.defpath), **variables}
    for key in ("HOME", "XDG_RUNTIME_DIR", "CONTAINERS_CONF", "DOCKER_HOST", "DOCKER_CONFIG"):
        if key in os.environ:
            environ.setdefault(key, os.environ[key])
    return argv, environ


def _target(spec: WorkerSpec) -> ContainerTarget:
    target = spec.target
    assert isinstance(target, ContainerTarget), target  # the local backend chose us by it
    return target


class ContainerWorker:
    """A worker in a container: the engine's client process carries its frames."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        proc: asyncio.subprocess.Process,
        gpus: tuple[str, ...],
        endpoint: str,
        on_exit: Callable[[tuple[str, ...]], Awaitable[None]],
    ) -> None:
        assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
        self.engine = engine
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.node = "local"
        self.reader = proc.stdout
        self.writer = proc.stdin
        self.gpus = gpus
        self._on_exit = on_exit
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._pump = asyncio.ensure_future(
            pump(
                proc.stderr,
                sys.stderr,
                f"[{endpoint}] ",
                self._stderr,
                endpoint=endpoint,
                pid=proc.pid,
            )
        )
        self._exited: asyncio.Task[int | None] | None = None
        self._removal: asyncio.Future[None] | None = None

    def kill(self) -> None:
        """Remove the container (killing what runs in it), then the engine's client."""
        if self.proc.returncode is not None:
            return
        if self._removal is None:
            self._removal = asyncio.ensure_future(self._remove())
        # Not proc.kill(): Popen.send_signal polls first, and may reap the client before
        # asyncio's watcher does, which then reports exit status 255 instead of the real one.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def _remove(self) -> None:
        with contextlib.suppress(OSError):
            proc = await asyncio.create_subprocess_exec(
                self.engine.path,
                "rm",
                "--force",
                self.name,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()

    async def wait(self) -> int | None:
        if self._exited is None:
            self._exited = asyncio.ensure_future(self._wait())
        return await asyncio.shield(self._exited)

    async def _wait(self) -> int | None:
        code = await self.proc.wait()
        if self._removal is not None:
            await asyncio.shield(self._removal)
        await asyncio.wait([self._pump], timeout=PUMP_GRACE_S)
        await self._on_exit(self.gpus)
        # The engine reports a container killed by signal N as 128+N.
        return -(code - 128) if 128 < code <= 128 + 64 else code

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)


async def start_container(
    engine: Engine,
    spec: WorkerSpec,
    gpus: tuple[str, ...],
    on_exit: Callable[[tuple[str, ...]], Awaitable[None]],
) -> ContainerWorker:
    """Run a worker of ``spec`` (its target a ContainerTarget) in a container."""
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in spec.endpoint)
    name = f"openflash-{safe}-{uuid.uuid4().hex[:12]}"
    if spec.volume is not None:
        spec.volume.mkdir(parents=True, exist_ok=True)
    argv, environ = container_argv(engine, spec, name, gpus)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environ,
            start_new_session=True,
            limit=OUTPUT_LINE_LIMIT,
        )
    except OSError as e:
        await on_exit(gpus)
        raise FlashError(
            f"cannot start a container of {_target(spec).image} for endpoint "
            f"{spec.endpoint!r}: {e}",
            hint=f"check that {engine.path} runs",
        ) from e
    return ContainerWorker(engine, name, proc, gpus, spec.endpoint, on_exit)
