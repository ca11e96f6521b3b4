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
from pathlib import Path
from typing import Any

from openflash.backends.local import worker_environ
from openflash.backends.output import OUTPUT_LINE_LIMIT, STDERR_TAIL_LINES, pump
from openflash.backends.targets import LocalTarget
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

    async def start(self) -> dict[str, Any]:
        """Start the worker process; where it runs and what it holds."""
        import ray

        info = self.info
        target = LocalTarget(Path(info["python"]), Path(info["runtime"]))
        spec = dataclasses.replace(
            self.spec,
            target=target,
            env={**info["layer_env"], **self.spec.env},
            paths={name: tuple(prefixes) for name, prefixes in info["layer_paths"].items()},
        )
        if info.get("project"):
            spec = _on_shipped_project(spec, Path(info["project"]), Path(info["project_origin"]))
        gpus = tuple(g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g)
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
        assert self._proc.stdout is not None and self._proc.stderr is not None
        prefix = f"[{spec.endpoint}] "
        self._pumps = [
            asyncio.ensure_future(pump(self._proc.stdout, sys.stdout, prefix, None)),
            asyncio.ensure_future(pump(self._proc.stderr, sys.stderr, prefix, self._stderr)),
        ]
        return {
            "pid": self._proc.pid,
            "ip": ray.util.get_node_ip_address(),
            "gpus": ",".join(gpus),
        }

    async def send(self, data: bytes) -> None:
        """Frames for the worker (written in the order the driver sends them, one at a time)."""
        assert self._writer is not None
        self._writer.write(data)
        with contextlib.suppress(OSError):
            await self._writer.drain()

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
