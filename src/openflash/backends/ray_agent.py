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

from openflash.backends.ray_project import unpack_project
from openflash.backends.targets import RayTarget
from openflash.envs.engine import NoEngineError, find_engine
from openflash.envs.images import prepare_image
from openflash.errors import FlashError
from openflash.prepare import Preparer

__all__ = ["NodeAgent"]


# Ray's stubs for ray.remote omit the actor options (max_concurrency, max_restarts).
@ray.remote(num_cpus=0, max_concurrency=16, max_restarts=-1)  # type: ignore[call-overload]
class NodeAgent:
    """openflash on one node: builds in the node's store (its own FLASH_HOME and caches) and
    notes what uses what. One per node and openflash version, named, and kept between runs, so
    that a new driver finds it started."""

    def __init__(self) -> None:
        self._node_preparer: Preparer | None = None

    def _preparer(self) -> Preparer:
        """The node's preparer (its settings, store, apt and caches), made on first use."""
        if self._node_preparer is None:
            self._node_preparer = Preparer()
        return self._node_preparer

    def use_package_cache(self, url: str, upstream: str) -> None:
        """Install from the driver's package cache at ``url`` first, ``upstream`` (the index it
        mirrors) as the fallback (deps/package_cache.py); this agent's builds only."""
        extra = os.environ.get("UV_EXTRA_INDEX_URL", "").split()
        if url not in extra:
            os.environ["UV_EXTRA_INDEX_URL"] = " ".join([url, *extra])
        os.environ.setdefault("UV_INDEX_URL", upstream)

    def prepare(self, spec: RayTarget) -> dict[str, Any]:
        """The environment, layer and worker runtime for ``spec``, built once per key (for an
        image endpoint, the image derived with the lock by the node's engine, once per key)."""
        if spec.image is not None:
            return self._derive(spec, spec.image)
        built = self._preparer().build_from_lock(
            spec.lock_text, spec.system_lock, options=spec.options
        )
        return {
            "python": str(built.environment.python),
            "runtime": str(built.runtime_path),
            "layer_env": built.layer.env,
            "layer_paths": built.layer.paths,
            "ip": ray.util.get_node_ip_address(),
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
            "ip": ray.util.get_node_ip_address(),
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
