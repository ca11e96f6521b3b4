"""A worker on a Ray node: an actor in Ray's own interpreter driving an openflash worker process.

The actor runs where Ray runs (the node's Python, with Ray and openflash importable) and starts
``<env>/bin/python -m openflash.workers.child FD N`` on its node, exactly as the local backend
does: the node-built environment's interpreter, the variables of ``worker_environ`` (read on the
node), one end of a socketpair. The user's code therefore never shares an interpreter with Ray: a
function pinning one of Ray's own dependencies (protobuf, msgpack, grpcio...) runs, and
``import ray`` inside it fails as it does locally. The actor only carries bytes: the driver sends
frames down with ``send`` and long-polls the worker's frames with ``receive`` (nested calls
included), so that the pool speaks to a Ray worker as it does to a local one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from openflash import _subprocess
from openflash.backends.containers import container_argv
from openflash.backends.local import worker_environ
from openflash.backends.output import OUTPUT_LINE_LIMIT, STDERR_TAIL_LINES, pump
from openflash.backends.targets import ContainerTarget, LocalTarget
from openflash.envs.engine import Engine
from openflash.workers.client import PROJECT_COPY, PROJECT_ORIGIN
from openflash.workers.port import WorkerSpec

__all__ = ["RayWorker"]

#: The most bytes one ``receive`` returns.
_CHUNK = 1 << 20


def _on_shipped_project(spec: WorkerSpec, copy: Path, origin: Path) -> WorkerSpec:
    """``spec`` importing the project from the node's copy, its working directory there too;
    the light client names the project's files by their driver paths (PROJECT_COPY/ORIGIN), as
    the driver's nested calls know them."""
    cwd = spec.cwd
    if cwd == origin or cwd.is_relative_to(origin):
        cwd = copy / cwd.relative_to(origin)
    env = {**spec.env, PROJECT_COPY: str(copy), PROJECT_ORIGIN: str(origin)}
    return dataclasses.replace(spec, project=copy, cwd=cwd, env=env)


class RayWorker:
    """One openflash worker process on this node, and the byte pipe to it."""

    def __init__(self, spec: WorkerSpec, info: dict[str, Any]) -> None:
        self.spec = spec
        self.info = info
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._pumps: list[asyncio.Task[None]] = []
        #: Where frames go: the socket's writer, or a container's stdin.
        self._stdin: asyncio.StreamWriter | None = None
        self._engine: Engine | None = None
        self._container = ""

    async def start(self) -> dict[str, Any]:
        """Start the worker process; where it runs and what it holds."""
        import ray

        info = self.info
        spec = self.spec
        if info.get("project"):
            spec = _on_shipped_project(spec, Path(info["project"]), Path(info["project_origin"]))
        gpus = tuple(g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g)
        if info.get("image"):
            await self._start_container(spec, gpus)
        else:
            await self._start_process(spec, gpus)
        assert self._proc is not None
        return {
            "pid": self._proc.pid,
            "ip": ray.util.get_node_ip_address(),
            "gpus": ",".join(gpus),
        }

    async def _start_container(self, spec: WorkerSpec, gpus: tuple[str, ...]) -> None:
        """A container of the image the node derived (backends/containers.py's command), its
        frames on the container's stdin and stdout."""
        info = self.info
        target = ContainerTarget(info["image"], info["python"], Path(info["runtime"]))
        cwd = spec.cwd if spec.cwd.is_dir() else (spec.project or target.runtime_path)
        spec = dataclasses.replace(spec, target=target, cwd=cwd)
        self._engine = Engine(info["engine"], info["engine_kind"])
        safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in spec.endpoint)
        self._container = f"openflash-{safe}-{uuid.uuid4().hex[:12]}"
        argv, environ = container_argv(self._engine, spec, self._container, gpus)
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environ,
            start_new_session=True,
            limit=OUTPUT_LINE_LIMIT,
        )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        assert self._proc.stderr is not None
        self._reader, self._stdin = self._proc.stdout, self._proc.stdin
        prefix = f"[{spec.endpoint}] "
        self._pumps = [
            asyncio.ensure_future(pump(self._proc.stderr, sys.stderr, prefix, self._stderr))
        ]

    async def _start_process(self, spec: WorkerSpec, gpus: tuple[str, ...]) -> None:
        info = self.info
        target = LocalTarget(Path(info["python"]), Path(info["runtime"]))
        spec = dataclasses.replace(
            spec,
            target=target,
            env={**info["layer_env"], **spec.env},
            paths={name: tuple(prefixes) for name, prefixes in info["layer_paths"].items()},
        )
        env = worker_environ(spec, target, (), bool(gpus))
        cwd = str(spec.cwd) if spec.cwd.is_dir() else None
        parent_sock, child_sock = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                str(target.python),
                "-m",
                "openflash.workers.child",
                str(child_sock.fileno()),
                str(spec.max_concurrency),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(child_sock.fileno(),),
                cwd=cwd,
                env=env,
                start_new_session=True,
                limit=OUTPUT_LINE_LIMIT,
            )
        finally:
            child_sock.close()
        self._reader, self._writer = await asyncio.open_unix_connection(
            sock=parent_sock, limit=OUTPUT_LINE_LIMIT
        )
        self._stdin = self._writer
        assert self._proc.stdout is not None and self._proc.stderr is not None
        prefix = f"[{spec.endpoint}] "
        self._pumps = [
            asyncio.ensure_future(pump(self._proc.stdout, sys.stdout, prefix, None)),
            asyncio.ensure_future(pump(self._proc.stderr, sys.stderr, prefix, self._stderr)),
        ]

    async def send(self, data: bytes) -> None:
        """Frames for the worker (written in the order the driver sends them, one at a time)."""
        assert self._stdin is not None
        self._stdin.write(data)
        with contextlib.suppress(OSError):
            await self._stdin.drain()

    async def receive(self) -> tuple[bytes, int | None, str]:
        """The worker's next bytes; at its end ``b""``, its exit status and last stderr lines."""
        assert self._reader is not None and self._proc is not None
        try:
            data = await self._reader.read(_CHUNK)
        except OSError:
            data = b""
        if data:
            return data, None, ""
        code = await self._proc.wait()
        await asyncio.wait(self._pumps, timeout=0.5)
        return b"", code, "\n".join(self._stderr)

    def kill(self) -> None:
        """Kill the worker and all it started (its session)."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        if self._engine is not None and self._container:  # the container too, not only its client
            _subprocess.run(
                [self._engine.path, "rm", "--force", self._container], timeout=60, check=False
            )
