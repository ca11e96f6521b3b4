"""openflash on one Ray node: the NodeAgent, a named, detached actor (no CPU) per node and
openflash version, that builds in the node's own store (environments, layers, the worker
runtime, images derived with its engine), unpacks the projects shipped to it (ray_project.py),
points its builds at the driver's package cache (deps/package_cache.py), and notes in the store
what uses what. backends/ray.py starts it and asks it.
"""

from __future__ import annotations

import os
from typing import Any

import ray

from openflash._version import __version__
from openflash.backends.ray_project import unpack_project
from openflash.backends.ray_templates import NodeTemplates, TemplateRequest
from openflash.backends.targets import RayTarget
from openflash.deps.namespace_mode import layer_mode
from openflash.envs.engine import NoEngineError, find_engine
from openflash.envs.images import prepare_image
from openflash.errors import FlashError
from openflash.prepare import Preparer

__all__ = ["NodeAgent", "agent_name"]


def agent_name(node: str) -> str:
    """The name of the agent of the node with Ray id ``node`` (namespace ``openflash``)."""
    return f"openflash-{__version__}-{node}"


# Ray's stubs for ray.remote omit the actor options (max_concurrency, max_restarts).
@ray.remote(num_cpus=0, max_concurrency=16, max_restarts=-1)  # type: ignore[call-overload]
class NodeAgent:
    """openflash on one node: builds in the node's store (its own FLASH_HOME and caches) and
    notes what uses what. One per node and openflash version, named, and kept between runs, so
    that a new driver finds it started."""

    def __init__(self) -> None:
        self._node_preparer: Preparer | None = None
        self._apt_proxy: tuple[str, tuple[str, ...]] = ("", ())
        self._templates = NodeTemplates()

    def template(self, request: TemplateRequest) -> tuple[str | None, str]:
        """The socket of the node's template for ``request`` (ray_templates.py), or None and
        why: it is starting (this worker is spawned), or it cannot fork."""
        return self._templates.socket_for(request)

    def _preparer(self) -> Preparer:
        """The node's preparer (its settings, store, apt and caches), made on first use."""
        if self._node_preparer is None:
            self._node_preparer = Preparer()
        self._node_preparer.apt.use_proxy(*self._apt_proxy)
        return self._node_preparer

    def use_package_cache(
        self, url: str, upstream: str, proxy: str = "", apt_hosts: tuple[str, ...] = ()
    ) -> None:
        """Install from the driver's package cache at ``url`` first, ``upstream`` (the index it
        mirrors) as the fallback, and fetch the .debs of the archives at ``apt_hosts`` through
        it as apt's proxy ``proxy`` (deps/package_cache.py); this agent's builds only."""
        extra = [u for u in os.environ.get("UV_EXTRA_INDEX_URL", "").split() if u != url]
        os.environ["UV_EXTRA_INDEX_URL"] = " ".join([url, *extra])
        os.environ.setdefault("UV_INDEX_URL", upstream)
        self._apt_proxy = (proxy, tuple(apt_hosts))

    def prepare(self, spec: RayTarget) -> dict[str, Any]:
        """The environment, layer and worker runtime for ``spec``, built once per key (for an
        image endpoint, the image derived with the lock by the node's engine, once per key)."""
        if spec.image is not None:
            return self._derive(spec, spec.image)
        preparer = self._preparer()
        built = preparer.build_from_lock(spec.lock_text, spec.system_lock, options=spec.options)
        mode = layer_mode(preparer.settings.namespaces)
        return {
            "python": str(built.environment.python),
            "runtime": str(built.runtime_path),
            "layer": str(built.layer.path) if built.layer.path else None,
            "layer_env": built.layer.env,
            "layer_paths": built.layer.paths,
            "namespaces": mode.namespaces,
            "mode": mode.name,
            "mode_reason": mode.reason,
            "fork": preparer.settings.fork,
            **self._node_info(),
        }

    def _node_info(self) -> dict[str, Any]:
        """What every worker on this node is told: its address, its volumes' folder."""
        return {
            "ip": ray.util.get_node_ip_address(),
            "volumes": str(self._preparer().settings.volumes_root),
        }

    def _derive(self, spec: RayTarget, image: str) -> dict[str, Any]:
        preparer = self._preparer()
        settings = preparer.settings
        try:
            engine = find_engine(settings.container_engine)
        except NoEngineError as e:
            raise FlashError(
                f"the image {image!r} runs on this node's container engine, and it has none: "
                f"{e.message}",
                hint="install podman (or docker) on every node, or set FLASH_CONTAINER_ENGINE "
                "in the environment of its `ray start`",
            ) from None
        chosen = prepare_image(
            preparer.store,
            engine,
            image,
            spec.lock_text,
            spec.image_system,
            uv_cache=settings.uv_cache_dir,
        )
        return {
            "image": chosen.image,
            "python": chosen.python,
            "engine": engine.path,
            "engine_kind": engine.kind,
            "runtime": str(preparer.worker_runtime()),
            "layer_env": {},
            "layer_paths": {},
            **self._node_info(),
        }

    def project(self, sha256: str, data: bytes | None) -> str | None:
        """The node's copy of the project ``sha256`` (unpacked from ``data`` once), or None when
        the node lacks it and ``data`` is None (ray_project.py)."""
        path = unpack_project(self._preparer().settings.home, sha256, data)
        return None if path is None else str(path)

    def record_use(self, endpoint: str, keys: list[tuple[str, str]]) -> None:
        """Note in the node's store that ``endpoint`` uses these entries."""
        store = self._preparer().store
        for kind, key in keys:
            if key:
                store.record_use(kind, key, endpoint)
