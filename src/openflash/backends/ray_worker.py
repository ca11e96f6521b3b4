"""A worker on a Ray node: an actor in Ray's own interpreter driving an openflash worker process.

The actor runs where Ray runs (the node's Python, with Ray and openflash importable) and starts
``<env>/bin/python -m openflash.workers.child FD N`` on its node, exactly as the local backend
does: the node-built environment's interpreter, the variables of ``worker_environ`` (read on the
node), one end of a socketpair. The user's code therefore never shares an interpreter with Ray: a
function pinning one of Ray's own dependencies (protobuf, msgpack, grpcio...) runs, and
``import ray`` inside it fails as it does locally. The actor only carries bytes: the driver sends
frames down with ``send`` and long-polls the worker's frames with ``receive`` (nested calls
included), so that the pool speaks to a Ray worker as it does to a local one.

As locally, the worker is forked from its template where it can be (the node's, owned by the
node's agent: ray_templates.py; ``FLASH_FORK=0`` on the node spawns every worker), and a worker
with a system layer or a volume runs in a private namespace (``workers/namespace.py``) where the
node allows it: the layer at its real paths, the volume (the node's folder of that name) at
``/runpod-volume``. ``start`` says which it did.
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
from openflash.backends.forked import ForkedProcess
from openflash.backends.local import worker_environ
from openflash.backends.output import OUTPUT_LINE_LIMIT, STDERR_TAIL_LINES, pump
from openflash.backends.ray_agent import agent_name
from openflash.backends.ray_templates import AttachedTemplate, TemplateRequest
from openflash.backends.targets import ContainerTarget, LocalTarget
from openflash.backends.templates import TemplateKey, TemplateUnsafe
from openflash.backends.worker_view import make_worker_folders, worker_main
from openflash.deps.namespace_mode import namespace_argv
from openflash.envs.engine import Engine
from openflash.workers.client import PROJECT_COPY, PROJECT_ORIGIN
from openflash.workers.lifeline import PARENT_VARIABLE
from openflash.workers.port import WorkerSpec

__all__ = ["RayWorker"]

#: The most bytes one ``receive`` returns.
_CHUNK = 1 << 20
#: A worker's variables that are its own, not its template's.
_PER_WORKER = frozenset({"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"})


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
        self._proc: asyncio.subprocess.Process | ForkedProcess | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._pumps: list[asyncio.Task[None]] = []
        #: Where frames go: the socket's writer, or a container's stdin.
        self._stdin: asyncio.StreamWriter | None = None
        self._engine: Engine | None = None
        self._container = ""
        #: Whether the worker runs in a namespace (its layer at its real paths).
        self.in_namespace = False
        #: How the worker started: forked from the node's template, or spawned (and why).
        self.started = "spawned"
        self._template: AttachedTemplate | None = None

    async def start(self) -> dict[str, Any]:
        """Start the worker process; where it runs and what it holds."""
        import ray

        info = self.info
        spec = self.spec
        if info.get("project"):
            spec = _on_shipped_project(spec, Path(info["project"]), Path(info["project_origin"]))
        if spec.volume is not None:  # the node's folder of that name (its FLASH_VOLUMES)
            spec = dataclasses.replace(spec, volume=Path(info["volumes"]) / spec.volume.name)
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
            "started": self.started,
            "namespace": self.in_namespace,
        }

    async def _start_container(self, spec: WorkerSpec, gpus: tuple[str, ...]) -> None:
        """A container of the image the node derived (backends/containers.py's command), its
        frames on the container's stdin and stdout."""
        info = self.info
        target = ContainerTarget(info["image"], info["python"], Path(info["runtime"]))
        cwd = spec.cwd if spec.cwd.is_dir() else (spec.project or target.runtime_path)
        spec = dataclasses.replace(spec, target=target, cwd=cwd)
        if spec.volume is not None:
            spec.volume.mkdir(parents=True, exist_ok=True)
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
            layer=Path(info["layer"]) if info.get("layer") else None,
        )
        # As the local backend: in a namespace (the layer at its real paths, the volume at
        # /runpod-volume) where the node allows it; else relocated (the node's mode, reported).
        wanted = spec.layer is not None or spec.volume is not None
        self.in_namespace = in_namespace = wanted and bool(info.get("namespaces"))
        env = worker_environ(spec, target, (), bool(gpus), in_namespace)
        make_worker_folders(env, spec.volume)
        cwd = str(spec.cwd) if spec.cwd.is_dir() else None
        parent_sock, child_sock = socket.socketpair()
        child = ["openflash.workers.child", str(child_sock.fileno()), str(spec.max_concurrency)]
        main = worker_main(env, child)
        argv = (
            namespace_argv(target.python, main)
            if in_namespace
            else [str(target.python), "-m", *main]
        )
        try:
            forked = await self._fork(spec, target, env, child_sock) if info.get("fork") else None
            self._proc = forked or await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(child_sock.fileno(),),
                cwd=cwd,
                env={**env, PARENT_VARIABLE: str(os.getpid())},  # it dies with this actor
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

    async def _fork(
        self, spec: WorkerSpec, target: LocalTarget, env: dict[str, str], sock: socket.socket
    ) -> ForkedProcess | None:
        """The worker forked from its node's template (ray_templates.py); None where the
        template is starting (this worker is spawned beside it) or cannot fork."""
        import ray

        # The template's variables are the worker's less its GPUs (each actor has its own).
        base = {k: v for k, v in env.items() if k not in _PER_WORKER}
        cwd = spec.cwd if spec.cwd.is_dir() else target.runtime_path
        request = TemplateRequest(TemplateKey.of(spec, target, base), cwd)
        try:
            node = ray.get_runtime_context().get_node_id()
            agent = ray.get_actor(agent_name(node), "openflash")
            path, why = await agent.template.remote(request)
        except (ValueError, ray.exceptions.RayError) as e:  # no agent (lost): spawned
            path, why = None, f"the node's agent did not answer: {e}"
        if path is None:
            self.started = f"spawned ({why})"
            return None
        template = AttachedTemplate(path)
        try:
            # The worker dies with this actor (workers.lifeline), not with the template.
            forked_env = {**env, PARENT_VARIABLE: str(os.getpid())}
            proc = await template.fork(forked_env, spec.max_concurrency, sock.fileno())
        except (TemplateUnsafe, OSError) as e:
            self.started = f"spawned (the template did not fork: {e})"
            return None
        self._template = template  # its connection tells the worker's exit
        self.started = f"forked from template {path}"
        return proc

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
