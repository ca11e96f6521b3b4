"""Workers as subprocesses of this process, the default backend.

Each worker is ``<env>/bin/python -m openflash.workers.child FD N`` in its own session (so one
``killpg`` stops it and everything it started), talking over one end of a socketpair. It dies,
with what it started, when this process dies (``workers.lifeline``: its parent's pid is passed
as ``OPENFLASH_PARENT_PID``). Its stdout
and stderr reach this process's stdout and stderr, each line prefixed with ``[endpoint]``; the last
lines of stderr are kept for crash reports. The environment it sees is rebuilt from scratch:
of this process's variables only those that say where and how it runs (``PASSED_VARIABLES``:
path, home, locale, proxies, CA files) are passed on, never API keys, tokens or other tools'
settings; the endpoint's ``env`` adds what its functions need.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from openflash._settings import Settings, shared_memory_min
from openflash.backends.containers import ContainerWorker, start_container
from openflash.backends.forked import ForkedProcess
from openflash.backends.forking import Forking
from openflash.backends.gpus import GpuAllocator
from openflash.backends.memory_cap import MemoryWatch
from openflash.backends.output import OUTPUT_LINE_LIMIT, PUMP_GRACE_S, STDERR_TAIL_LINES, pump
from openflash.backends.targets import ContainerTarget, LocalTarget
from openflash.backends.templates import TemplateKey
from openflash.backends.worker_view import make_worker_folders, worker_main, worker_view_env
from openflash.deps.namespace_mode import layer_mode, namespace_argv
from openflash.envs.engine import find_engine
from openflash.errors import FlashError
from openflash.prepare import Preparer
from openflash.workers import shared_memory
from openflash.workers.lifeline import PARENT_VARIABLE
from openflash.workers.port import WorkerSpec

__all__ = ["PASSED_VARIABLES", "LocalBackend", "LocalWorker", "worker_environ"]

logger = logging.getLogger("openflash")

#: The host variables a worker sees (besides its endpoint's ``env``): where and how it runs.
PASSED_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TERM",
        "LD_LIBRARY_PATH",
        "XDG_DATA_DIRS",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONFAULTHANDLER",
        "PYTHONWARNINGS",
    }
)
PASSED_PREFIXES = ("LC_",)
#: The memory cap the worker applies to itself (workers.child.MAX_RSS_VARIABLE).
MAX_RSS_VARIABLE = "OPENFLASH_MAX_RSS"


#: What an unset path-like variable means, so that prefixing it keeps the default.
PATH_DEFAULTS = {"PATH": os.defpath, "XDG_DATA_DIRS": "/usr/local/share:/usr/share"}


def worker_environ(
    spec: WorkerSpec,
    target: LocalTarget,
    gpus: tuple[str, ...],
    has_gpus: bool,
    namespaces: bool = False,
) -> dict[str, str]:
    """The variables of a worker of ``spec`` (run as ``target``) holding ``gpus``: its own home
    and volume (``backends.worker_view``); with ``namespaces``, what its launcher mounts."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k in PASSED_VARIABLES or k.startswith(PASSED_PREFIXES)
    }
    for name, prefixes in spec.paths.items():
        rest = env.get(name) or PATH_DEFAULTS.get(name, "")
        env[name] = os.pathsep.join([*prefixes, *filter(None, [rest])])
    env_dir = target.python.parent.parent
    env["VIRTUAL_ENV"] = str(env_dir)
    env["PATH"] = os.pathsep.join([str(target.python.parent), env.get("PATH", os.defpath)])
    env["PYTHONNOUSERSITE"] = "1"
    env.update(worker_view_env(spec, env_dir, namespaces))
    env.update(spec.env)
    user_path = spec.env.get("PYTHONPATH")
    # The runtime goes behind site-packages when the worker starts (workers.child); the project
    # stays in front of it, where a script's own folder is, so its modules import as they do
    # for the caller.
    project = str(spec.project) if spec.project else None
    entries = [str(target.runtime_path), project, user_path]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, entries))
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    elif has_gpus and spec.gpu_count == 0 and "CUDA_VISIBLE_DEVICES" not in spec.env:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU endpoint does not take a GPU from the others
    env["OPENFLASH_ENDPOINT"] = spec.endpoint
    if spec.max_rss:
        env[MAX_RSS_VARIABLE] = str(spec.max_rss)
    return env


class LocalWorker:
    """A running worker subprocess: its socket streams, output pumps and exit status."""

    #: The descriptors of its large results' files, as they came (shared_memory.Receiving).
    descriptors: collections.deque[int] | None = None

    def __init__(
        self,
        proc: asyncio.subprocess.Process | ForkedProcess,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        gpus: tuple[str, ...],
        endpoint: str,
        on_exit: Callable[[tuple[str, ...]], Awaitable[None]],
        max_rss: int | None = None,
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.node = "local"
        #: Forked from a template, or spawned (the dashboard's detail).
        self.started = "forked" if isinstance(proc, ForkedProcess) else "spawned"
        self.reader = reader
        self.writer = writer
        self.gpus = gpus
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._on_exit = on_exit
        self._exited: asyncio.Task[int | None] | None = None
        prefix = f"[{endpoint}] "
        assert proc.stdout is not None and proc.stderr is not None
        self._pumps = [
            asyncio.ensure_future(
                pump(proc.stdout, sys.stdout, prefix, None, endpoint=endpoint, pid=proc.pid)
            ),
            asyncio.ensure_future(
                pump(proc.stderr, sys.stderr, prefix, self._stderr, endpoint=endpoint, pid=proc.pid)
            ),
        ]
        #: Set when the worker's tree went past FLASH_WORKER_MAX_RSS and was killed: what its
        #: calls in flight fail with (the pool reads it).
        self.memory_error: MemoryError | None = None
        self._watch = MemoryWatch(proc.pid, max_rss, self._over_cap) if max_rss else None

    def _over_cap(self, error: MemoryError) -> None:
        self.memory_error = error

    def kill(self) -> None:
        if self.proc.returncode is None:  # once reaped, its pid may belong to someone else
            self._killpg()

    def _killpg(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def wait(self) -> int | None:
        if self._exited is None:
            self._exited = asyncio.ensure_future(self._wait())
        return await asyncio.shield(self._exited)

    async def _wait(self) -> int | None:
        code = await self.proc.wait()
        self._killpg()  # whatever it started goes with it
        if self._watch is not None:
            self._watch.stop()
        with contextlib.suppress(Exception):
            self.writer.close()
        await asyncio.wait(self._pumps, timeout=PUMP_GRACE_S)
        await self._on_exit(self.gpus)
        return code

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)


class LocalBackend:
    """Spawns workers on this machine."""

    #: Environments are built where this process runs.
    builds_locally = True

    @classmethod
    def from_settings(cls, settings: Settings, preparer: Preparer | None = None) -> LocalBackend:
        """The backend ``settings`` ask for (``preparer`` is unused: environments are built
        by the runtime, in this process)."""
        return cls(
            require_gpu=settings.require_gpu,
            fork=settings.fork,
            registry=settings.home / "templates",
            container_engine=settings.container_engine,
            namespaces=settings.namespaces,
            template_idle_timeout=settings.template_idle_timeout,
        )

    def __init__(
        self,
        *,
        require_gpu: bool = False,
        gpus: tuple[str, ...] | None = None,
        fork: bool = False,
        registry: Path | None = None,
        container_engine: str | None = None,
        namespaces: bool = True,
        template_idle_timeout: float | None = None,
    ) -> None:
        #: Whether workers with a layer may run in a namespace (FLASH_NAMESPACES), if it works.
        self.namespaces = namespaces
        #: FLASH_CONTAINER_ENGINE, for endpoints with an image.
        self.container_engine = container_engine
        self.require_gpu = require_gpu
        self._gpus = gpus
        self._allocator: GpuAllocator | None = None
        self._warned: set[str] = set()
        self._next_cpu = 0
        #: Fork workers from templates (FLASH_FORK), where the platform can.
        self.fork = fork and hasattr(os, "fork") and hasattr(socket, "send_fds")
        self._forking = Forking(registry, template_idle_timeout)

    def _gpu_allocator(self) -> GpuAllocator:
        if self._allocator is None:
            given = self._gpus
            self._allocator = GpuAllocator(given) if given is not None else GpuAllocator.detected()
        return self._allocator

    async def _take_gpus(self, spec: WorkerSpec) -> tuple[str, ...]:
        if spec.gpu_count == 0:
            return ()
        allocator = self._gpu_allocator()
        if allocator.devices:
            return await allocator.acquire(spec.gpu_count, spec.endpoint, spec.gpu_types)
        if self.require_gpu:
            raise FlashError(
                f"endpoint {spec.endpoint!r} asks for {spec.gpu_count} GPU(s), and this machine "
                "has no NVIDIA GPU (nvidia-smi lists none)",
                hint="run on a machine with an NVIDIA GPU, use a CPU config, or unset "
                "FLASH_REQUIRE_GPU to run on the CPU with a warning",
            )
        if spec.endpoint not in self._warned:
            self._warned.add(spec.endpoint)
            logger.warning(
                "openflash: endpoint %r asks for a GPU, but this machine has no NVIDIA GPU; its "
                "workers run on the CPU (set FLASH_REQUIRE_GPU=1 to make this an error)",
                spec.endpoint,
            )
        return ()

    async def start_worker(self, spec: WorkerSpec) -> LocalWorker | ContainerWorker:
        """A worker process (LocalTarget) or container (ContainerTarget) of ``spec``."""
        target = spec.target
        if isinstance(target, ContainerTarget):
            engine = find_engine(self.container_engine)
            gpus = await self._take_gpus(spec)
            return await start_container(engine, spec, gpus, self._gpu_allocator().release)
        if not isinstance(target, LocalTarget):
            raise FlashError(
                f"endpoint {spec.endpoint!r} has no environment on this machine",
                hint="this is a bug in openflash: please report it",
            )
        gpus = await self._take_gpus(spec)
        allocator = self._gpu_allocator()
        in_namespace = self._in_namespace(spec)
        env = worker_environ(spec, target, gpus, bool(allocator.devices), in_namespace)
        make_worker_folders(env, spec.volume)
        loop = asyncio.get_running_loop()
        results_min = shared_memory_min() if shared_memory.receivable(loop) else None
        if results_min is not None:
            env[shared_memory.RESULTS_VARIABLE] = str(results_min)
        parent_sock, child_sock = socket.socketpair()
        try:
            forked = await self._fork(spec, target, env, child_sock)
            if forked is None and self.fork:  # a template that answers late may hold child_sock
                parent_sock.close()
                child_sock.close()
                parent_sock, child_sock = socket.socketpair()
            child = [
                "openflash.workers.child",
                str(child_sock.fileno()),
                str(spec.max_concurrency),
            ]
            main = worker_main(env, child)
            argv = (
                namespace_argv(target.python, main)
                if in_namespace
                else [str(target.python), "-m", *main]
            )
            proc = forked or await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(child_sock.fileno(),),
                cwd=str(spec.cwd),
                env={**env, PARENT_VARIABLE: str(os.getpid())},  # it dies with this process
                start_new_session=True,
                limit=OUTPUT_LINE_LIMIT,
            )
        except asyncio.CancelledError:  # its start ran past the pool's start timeout
            parent_sock.close()
            await asyncio.shield(allocator.release(gpus))
            raise
        except OSError as e:
            parent_sock.close()
            await allocator.release(gpus)
            raise FlashError(
                f"cannot start a worker for endpoint {spec.endpoint!r} with {target.python}: {e}",
                hint="the environment may have been removed; delete it from FLASH_HOME/envs "
                "and call again to rebuild it",
            ) from e
        finally:
            child_sock.close()
        self._limit_cpus(proc.pid, spec.vcpus)
        receiving = shared_memory.Receiving.of(parent_sock) if results_min else None
        reader, writer = await asyncio.open_unix_connection(sock=receiving or parent_sock)
        worker = LocalWorker(
            proc, reader, writer, gpus, spec.endpoint, allocator.release, spec.max_rss
        )
        worker.descriptors = receiving.descriptors if receiving else None
        return worker

    def _in_namespace(self, spec: WorkerSpec) -> bool:
        """Whether ``spec``'s workers start in a namespace with their layer at its real paths."""
        wanted = spec.layer is not None or spec.volume is not None
        return self.namespaces and wanted and layer_mode().namespaces

    def _limit_cpus(self, pid: int, vcpus: int | None) -> None:
        """Pin the worker to ``vcpus`` CPUs (its instance type's), spreading workers around."""
        if not vcpus or not hasattr(os, "sched_setaffinity"):
            return
        cpus = sorted(os.sched_getaffinity(0))
        if vcpus >= len(cpus):
            return
        start = self._next_cpu % len(cpus)
        self._next_cpu += vcpus
        chosen = {cpus[(start + i) % len(cpus)] for i in range(vcpus)}
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, chosen)

    async def _fork(
        self, spec: WorkerSpec, target: LocalTarget, env: dict[str, str], sock: socket.socket
    ) -> ForkedProcess | None:
        """A worker forked from the spec's template; None where forking is off or unsafe."""
        if not self.fork:
            return None
        return await self._forking.fork(spec, self._template_key(spec, target), env, sock)

    def _template_key(self, spec: WorkerSpec, target: LocalTarget) -> TemplateKey:
        base = worker_environ(
            spec, target, (), bool(self._gpu_allocator().devices), self._in_namespace(spec)
        )
        return TemplateKey.of(spec, target, base)

    def start_overdue(self, spec: WorkerSpec) -> str | None:
        """A start of ``spec``'s worker ran past the pool's bound with no process of its own:
        the template it waited for (still starting), stopped and replaced; None if none."""
        if not self.fork or not isinstance(spec.target, LocalTarget):
            return None
        return self._forking.start_overdue(spec, self._template_key(spec, spec.target))

    def templates(self) -> list[dict[str, object]]:
        """What each template preloaded, its memory and forks (for the dashboard)."""
        return self._forking.describe()

    async def close(self) -> None:
        await self._forking.close()
