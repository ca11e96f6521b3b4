"""Workers as Ray actors, on the cluster at RAY_ADDRESS (``pip install 'openflash[ray]'``).

Ray places, schedules and carries; openflash keeps its own environments. For each worker the
backend picks a node, has that node build the environment and system layer in its own store
from the lock resolved here (once per node per key, shared by every actor there), then starts
the worker's actor there. The node's builds are done by its NodeAgent: a named, detached actor
(no CPU) started by the first driver that needs the node and kept until ``ray stop``, so that a
new driver does not wait for a Ray worker to start. The worker's actor runs in Ray's own
interpreter and starts the openflash worker process in the environment, as the local backend
does (ray_worker.py), so nothing of Ray is on the user's path and the user's pins never shadow
Ray's. The pool speaks its usual frames; ray_handles.py carries them through actor calls.

Mapping: ``gpuCount`` -> ``num_gpus``, ``gpus`` (GPU types) -> the nodes whose Ray
``accelerator_type:`` or custom ``gpu_type:`` resources say they have them (gpu_types.py), the
CPU instance type's vCPUs -> ``num_cpus``, ``max_concurrency`` -> the actor's concurrency. A
dead actor (killed, out of memory, its node lost) ends the worker: its calls fail with
WorkerCrashedError naming the node.

As on the local backend, a worker with a system layer or a volume runs in a private namespace
(the layer at its packages' real paths, the volume at ``/runpod-volume``) where the node allows
it, else in the relocated mode, which the driver reports once per node. A volume
(``NetworkVolume(name=...)``, ``volume=``) is the folder of that name in the node's
``FLASH_VOLUMES`` (default its ``FLASH_HOME/volumes``): one folder per node, unless every node's
``FLASH_VOLUMES`` is the same shared filesystem mount.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import ray
from ray.actor import ActorClass
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from openflash._settings import Settings
from openflash.backends.gpu_types import ray_nodes_for
from openflash.backends.ray_agent import NodeAgent, agent_name
from openflash.backends.ray_handles import RayWorkerHandle, cause
from openflash.backends.ray_project import PackedProject, pack_project
from openflash.backends.targets import RayTarget
from openflash.deps.package_cache import PackageCache
from openflash.errors import FlashError
from openflash.prepare import Preparer
from openflash.workers.port import WorkerSpec

__all__ = ["RayBackend", "RayWorkerHandle"]

logger = logging.getLogger("openflash")

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class NodeBuildKey:
    """What a node builds once: an environment (``env_key``) and a system layer (``layer``,
    "" for none) on the node of that Ray id."""

    node: str
    env_key: str
    layer: str


class RayBackend:
    """Starts workers as actors on a Ray cluster."""

    builds_locally = False

    @classmethod
    def from_settings(cls, settings: Settings, preparer: Preparer | None = None) -> RayBackend:
        return cls(settings, preparer)

    def __init__(self, settings: Settings, preparer: Preparer | None = None) -> None:
        self.settings = settings
        #: The process's preparer (the runtime's): Ray's own lock is resolved through it.
        self.preparer = preparer or Preparer(settings)
        self.address = settings.ray_address
        self._prepared: dict[NodeBuildKey, asyncio.Future[dict[str, Any]]] = {}
        self._agents: dict[str, Any] = {}
        self._per_node: collections.Counter[str] = collections.Counter()
        self._warned: set[str] = set()
        #: Nodes reported as running layers relocated (no namespaces there).
        self._relocated: set[str] = set()
        self._live: set[RayWorkerHandle] = set()
        self._addresses: dict[str, str] = {}
        self._cache: PackageCache | None = None
        self._cache_told: set[str] = set()
        self._packed: dict[tuple[Path, str], PackedProject] = {}
        self._shipped: dict[tuple[str, str], asyncio.Future[str]] = {}
        self._connecting = threading.Lock()
        #: Whether this backend called ray.init (and so leaves with ray.shutdown when closed).
        self._joined = False

    def _connect(self) -> None:
        with self._connecting:  # workers start in parallel; Ray is joined once
            self._join()

    def _join(self) -> None:
        if not ray.is_initialized():
            self._joined = True
            quiet = logging.getLogger("ray._private.worker")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # not its "no SIGTERM handler in a thread" warning
            try:
                ray.init(
                    address=self.address or "auto",
                    ignore_reinit_error=True,
                    logging_level=logging.WARNING,
                    log_to_driver=True,
                )
            finally:
                quiet.setLevel(level)
            # Registered after ray.init's own, so it runs first: actors go while Ray is up.
            atexit.register(self._kill_all)
        if self._cache is None and self.settings.ray_package_cache:
            upstream = os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"
            hosts = self.preparer.apt.repository_hosts()  # the .debs' archives, served too
            self._cache = PackageCache(self.settings.home / "package-cache", upstream, hosts)
            self._cache.start(host=ray.util.get_node_ip_address())

    async def start_worker(self, spec: WorkerSpec) -> RayWorkerHandle:
        """An actor for ``spec`` (its target a RayTarget) on a node that has built its
        environment."""
        target = spec.target
        if not isinstance(target, RayTarget):
            raise FlashError(
                f"endpoint {spec.endpoint!r} was prepared for another backend than Ray",
                hint="this is a bug in openflash: please report it",
            )
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._connect)
        except Exception as e:
            raise FlashError(
                f"cannot reach the Ray cluster at {self.address or 'auto'}: {e}",
                hint="start one with `ray start --head`, or set RAY_ADDRESS to its address",
            ) from e
        gpus = self._gpus_for(spec)
        cpus = float(spec.vcpus or 1)
        node = self._choose_node(spec, target, cpus, gpus)
        self._per_node[node] += 1  # counted now, so that workers starting together spread
        try:
            info = await self._node_ready(node, spec.endpoint, target)
            if spec.project is not None and spec.project.is_dir():
                info = {**info, **await self._project_on(node, spec.project, spec.project_digest)}
        except BaseException:
            self._per_node[node] -= 1
            raise
        from openflash.backends.ray_worker import RayWorker

        # The actor runs in Ray's own interpreter (no runtime_env): the user's code runs in the
        # worker process it starts, in the environment the node built.
        actor = (
            ray.remote(RayWorker)
            .options(
                num_cpus=cpus,
                num_gpus=gpus,
                max_restarts=0,
                max_concurrency=max(spec.max_concurrency, 1) + 4,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            )
            .remote(spec, info)
        )

        def ended(handle: RayWorkerHandle) -> None:
            self._per_node[node] -= 1
            self._live.discard(handle)

        handle = RayWorkerHandle(actor, self._addresses.get(node, info["ip"]), on_exit=ended)
        self._live.add(handle)
        handle.start()
        return handle

    def _kill_all(self) -> None:
        for handle in list(self._live):
            handle.expected_exit = True  # the process is exiting: no warning for this
            handle.kill()

    def _gpus_for(self, spec: WorkerSpec) -> int:
        if not spec.gpu_count:
            return 0
        resources = ray.cluster_resources()
        if resources.get("GPU", 0) >= spec.gpu_count:
            return spec.gpu_count
        if self.settings.require_gpu:
            raise FlashError(
                f"endpoint {spec.endpoint!r} asks for {spec.gpu_count} GPU(s) per worker, and the "
                "Ray cluster has none that many",
                hint="add GPU nodes, use a CPU config, or unset FLASH_REQUIRE_GPU",
            )
        if spec.endpoint not in self._warned:
            self._warned.add(spec.endpoint)
            logger.warning(
                "openflash: endpoint %r asks for a GPU, but the Ray cluster has none; "
                "its workers run on CPUs (set FLASH_REQUIRE_GPU=1 to make this an "
                "error)",
                spec.endpoint,
            )
        return 0

    def _choose_node(self, spec: WorkerSpec, target: RayTarget, cpus: float, gpus: int) -> str:
        """An alive node that can hold the worker: one that has the environment, else the least
        busy (by openflash workers), so that workers spread."""
        nodes: list[dict[str, Any]] = ray.nodes()
        self._addresses.update({n["NodeID"]: n["NodeManagerAddress"] for n in nodes})
        fitting = [
            n
            for n in nodes
            if n["Alive"]
            and n["Resources"].get("CPU", 0) >= cpus
            and n["Resources"].get("GPU", 0) >= gpus
        ]
        if gpus and spec.gpu_types:  # the nodes of the first allowed type any node has
            typed = ray_nodes_for(
                spec.endpoint, spec.gpu_types, gpus, {n["NodeID"]: n["Resources"] for n in fitting}
            )
            fitting = [n for n in fitting if n["NodeID"] in typed]
        if not fitting:
            raise FlashError(
                f"no node of the Ray cluster offers {cpus:g} CPU(s) and {gpus} GPU(s), which "
                f"endpoint {spec.endpoint!r} asks for each worker",
                hint="use a smaller CPU instance type, or add a larger node",
            )
        prepared = {k.node for k in self._prepared if k.env_key == target.env_key}
        ids: list[str] = [n["NodeID"] for n in fitting]
        return min(ids, key=lambda node: (self._per_node[node], node not in prepared))

    async def _node_ready(self, node: str, endpoint: str, target: RayTarget) -> dict[str, Any]:
        """What ``node`` built for ``target`` (once per node, environment and layer)."""
        layer = target.layer_key
        key = NodeBuildKey(node, target.env_key, layer)
        future = _once(self._prepared, key, lambda: self._prepare(node, target))
        try:
            info = await asyncio.shield(future)
        except ray.exceptions.RayError as e:
            raise FlashError(
                f"building the environment of endpoint {endpoint!r} on Ray node "
                f"{self._addresses.get(node, node)} failed:\n{cause(e)}",
                hint="read the node's error above; fix the dependencies and call again",
            ) from None
        if layer and not info.get("namespaces", True) and node not in self._relocated:
            self._relocated.add(node)
            logger.warning(
                "openflash: Ray node %s runs workers with system packages in the relocated mode "
                "(%s): programs find them through PATH and LD_LIBRARY_PATH, not at /usr",
                self._addresses.get(node, node),
                info.get("mode_reason", "no namespaces"),
            )
        agent = await self._agent(node)
        # Awaited (a few ms): once a worker runs, its node's store says who uses what, so that
        # `flash env prune` there and the tests that read it never see a use still in flight.
        await agent.record_use.remote(endpoint, [("envs", target.env_key), ("layers", layer)])
        return info

    async def _project_on(self, node: str, project: Path, digest: str) -> dict[str, str]:
        """The project folder on ``node``: packed here (once per fingerprint), shipped once per
        node and content (ray_project.py)."""
        loop = asyncio.get_running_loop()
        packed = self._packed.get((project, digest)) if digest else None
        if packed is None:
            limit = self.settings.ray_project_limit
            packed = await loop.run_in_executor(None, pack_project, project, limit)
            if digest:
                self._packed[(project, digest)] = packed
        key = (node, packed.sha256)
        future = _once(self._shipped, key, lambda: self._ship(node, packed))
        try:
            path = await asyncio.shield(future)
        except ray.exceptions.RayError as e:
            raise FlashError(
                f"shipping the project {project} to Ray node "
                f"{self._addresses.get(node, node)} failed:\n{cause(e)}",
                hint="read the node's error above (its disk, its FLASH_HOME) and call again",
            ) from None
        return {"project": path, "project_origin": packed.origin}

    async def _ship(self, node: str, packed: PackedProject) -> str:
        agent = await self._agent(node)
        path: str | None = await agent.project.remote(packed.sha256, None)
        if path is None:  # the node lacks it: the bytes travel once
            path = await agent.project.remote(packed.sha256, packed.data)
        assert path is not None
        return path

    async def _prepare(self, node: str, target: RayTarget) -> dict[str, Any]:
        info: dict[str, Any]
        if self._cache is not None and node not in self._cache_told:
            agent = await self._agent(node)
            cache = self._cache
            await agent.use_package_cache.remote(
                cache.url, cache.upstream.url, cache.proxy_url, cache.apt_hosts
            )
            self._cache_told.add(node)
        try:
            info = await (await self._agent(node)).prepare.remote(target)
        except ray.exceptions.RayActorError:  # the agent was lost (restarting): once more
            self._agents.pop(node, None)
            info = await (await self._agent(node)).prepare.remote(target)
        return info

    async def _agent(self, node: str) -> Any:
        """The node's agent, started by the first driver that needs it."""
        agent = self._agents.get(node)
        if agent is None:
            # ray.remote made NodeAgent an actor class (its stubs, ignored above, do not say so).
            agents = cast(ActorClass[NodeAgent], NodeAgent)
            options = agents.options(
                name=agent_name(node),
                namespace="openflash",
                lifetime="detached",
                get_if_exists=True,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            )
            loop = asyncio.get_running_loop()
            agent = self._agents[node] = await loop.run_in_executor(None, options.remote)
        return agent

    async def close(self) -> None:
        """Leave the cluster if this backend joined it (a driver left connected to a cluster that
        then stops is ended by Ray itself, exit code 1, a minute later)."""
        if self._joined and ray.is_initialized():
            self._kill_all()
            await asyncio.get_running_loop().run_in_executor(None, ray.shutdown)
        self._joined = False
        if self._cache is not None:
            self._cache.close()
            self._cache = None
            self._cache_told.clear()


def _once(
    started: dict[K, asyncio.Future[V]], key: K, start: Callable[[], Coroutine[Any, Any, V]]
) -> asyncio.Future[V]:
    """The one task for ``key`` (a node's build, a project shipped to a node), shared by every
    caller; started again only after the last one failed."""
    future = started.get(key)
    if future is None or (future.done() and future.exception() is not None):
        future = started[key] = asyncio.ensure_future(start())
    return future
