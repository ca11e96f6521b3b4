"""The process-wide runtime: endpoints to prepared environments to pools, on one event loop.

User code calls from whatever event loop it runs (often a fresh ``asyncio.run`` per call); pools
and worker streams must live on one loop, so they live on the runtime's own thread and callers
hop to it (hops.py), or are lent a warm worker (lanes.py; a server gives the runtime its own
loop instead). Preparing an endpoint (prepare/) runs in a thread pool, once per dependency set
however many calls arrive at once; the store's file locks make it once per machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections.abc import Callable

from openflash._settings import Settings
from openflash.backends import load_backend
from openflash.envs.local_sources import local_sources_digest
from openflash.errors import FlashError
from openflash.prepare import DependencyKey, Prepared, Preparer
from openflash.prepare.build_progress import BuildProgress
from openflash.runtime import hops, lending
from openflash.runtime.definitions import EndpointDef
from openflash.runtime.image_endpoints import (
    ImageKey,
    PreparedImage,
    image_spec,
    local_image_target,
    prepare_image_endpoint,
    ray_image_target,
)
from openflash.runtime.nested_calls import NestedCalls
from openflash.runtime.pool_keys import PoolKey
from openflash.runtime.preload import learned_record, recorder
from openflash.runtime.worker_specs import worker_spec
from openflash.workers.calls import Call, Reply
from openflash.workers.pool import Pool
from openflash.workers.port import Backend, WorkerSpec
from openflash.workers.waits import Waits

__all__ = ["Runtime"]


logger = logging.getLogger("openflash")


class Runtime:
    """Pools and preparations on one event loop: a thread of its own, or a loop it is given.

    A server that already runs an event loop (``flash run``) gives it its own loop, so that its
    requests reach pools without crossing threads.
    """

    def __init__(
        self,
        settings: Settings,
        backend: Backend | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.settings = settings
        #: The one preparer of this process's endpoints; it owns the store.
        self.preparer = Preparer(settings)
        self.backend = backend or load_backend(settings, self.preparer)
        self._owns_loop = loop is None
        self.loop = loop or asyncio.new_event_loop()
        self._builders = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="openflash-build"
        )
        self._prepared: dict[DependencyKey, asyncio.Future[Prepared]] = {}
        self._images: dict[ImageKey, asyncio.Future[PreparedImage]] = {}
        self._stale_warned: set[str] = set()
        self._pools: dict[PoolKey, Pool] = {}
        self._retiring: set[Pool] = set()  # replaced, finishing their calls
        self._endpoint_pools: dict[EndpointDef, Pool] = {}
        #: The key each endpoint's pool was prepared for (to notice edited local sources).
        self._endpoint_keys: dict[EndpointDef, DependencyKey] = {}
        self._closing = False
        #: Where first calls' builds show their steps (None: a server logs them itself).
        self.progress: BuildProgress | None = BuildProgress()
        self.nested = NestedCalls(self)
        self.waits = Waits()
        if self._owns_loop:
            self._thread = threading.Thread(target=self._run, name="openflash-runtime", daemon=True)
            self._thread.start()
        else:
            self._thread = threading.current_thread()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # From any thread.

    async def call(self, endpoint: EndpointDef, call: Call) -> Reply:
        """Run ``call`` from whichever event loop awaits it: on the runtime's own, straight to
        its pool; from another, on a worker lent to that loop (runtime/lanes.py), else one hop
        each way (runtime/hops.py)."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            lent = lending.send(loop, self, endpoint, call)  # on a worker lent to this loop
            if lent is not None:
                try:
                    return await lent[1]
                except asyncio.CancelledError:
                    lent[0].cancel(lent[1], call)
                    raise
            return await hops.across(
                self.loop, functools.partial(self._begin, endpoint, call), call
            )
        pool = self._warm_pool(endpoint)
        return await (self._submit(endpoint, call) if pool is None else pool.submit(call))

    def release_instance(self, endpoint: EndpointDef, instance_id: str) -> None:
        if self.loop.is_closed():
            return
        pool = self._endpoint_pools.get(endpoint)
        if pool is not None:
            self.loop.call_soon_threadsafe(pool.release_instance, instance_id)

    def pool_stats(self, endpoint: EndpointDef) -> dict[str, object] | None:
        pool = self._endpoint_pools.get(endpoint)
        if pool is None:
            return None
        if threading.current_thread() is self._thread:
            return pool.stats()
        return asyncio.run_coroutine_threadsafe(_stats(pool), self.loop).result(5)

    def prepare(self, endpoint: EndpointDef) -> concurrent.futures.Future[Pool]:
        """Resolve and build what ``endpoint`` needs now, without calling it."""
        return asyncio.run_coroutine_threadsafe(self._pool_for(endpoint), self.loop)

    def _deps_key(self, endpoint: EndpointDef) -> DependencyKey:
        """The endpoint's key: a GPU endpoint's undeclared imports of the GPU base set added
        (deps/gpu_base.py)."""
        return self.preparer.dependency_key(
            endpoint.dependencies,
            endpoint.system_dependencies,
            endpoint.lockfile,
            local_sources_digest(endpoint.dependencies),
            endpoint.options,
            gpu_imports=endpoint.gpu_imports,
            imports=endpoint.imports,
            gpu=endpoint.wants_gpu,
            project_lock=endpoint.uv_lock,
        )

    def build(self, endpoint: EndpointDef) -> Prepared:
        """Resolve and build ``endpoint``'s environment and layer in this thread (no workers).

        Progress lines go to this thread's ``_subprocess.reporting`` sink.
        """
        prepared = self.preparer.build(self._deps_key(endpoint))
        self.preparer.record_use(endpoint.name, prepared)
        return prepared

    def refresh(self, endpoints: list[EndpointDef]) -> concurrent.futures.Future[list[str]]:
        """Prepare ``endpoints`` in the background, then retire the pools they replace (their
        queued calls handed back, running ones finished: workers/handover.py).

        A pool is replaced when an endpoint of its name now has other dependencies or another
        config; pools of unchanged endpoints keep their warm workers. Returns the names of the
        endpoints whose pools were retired."""
        return asyncio.run_coroutine_threadsafe(self._refresh(endpoints), self.loop)

    def build_status(self, endpoint: EndpointDef) -> dict[str, object]:
        """How the preparation of ``endpoint``'s environment and layer goes."""
        return self.preparer.status(self._deps_key(endpoint)).as_dict()

    def templates(self) -> list[dict[str, object]]:
        """The backend's worker templates: what each preloaded, its memory, its forks."""
        describe = getattr(self.backend, "templates", None)
        return list(describe()) if describe is not None else []

    def status(self, endpoint: EndpointDef) -> dict[str, object]:
        """The state of ``endpoint``'s environment and its workers."""
        return {"build": self.build_status(endpoint), "pool": self.pool_stats(endpoint)}

    def close(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        if not self._owns_loop:
            if self.loop.is_running() and threading.current_thread() is not self._thread:
                future = asyncio.run_coroutine_threadsafe(self._close(), self.loop)
                with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                    future.result(timeout)
            self._builders.shutdown(wait=False, cancel_futures=True)
            return
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._close(), self.loop)
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                future.result(timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
        self._builders.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """Stop every pool, from the runtime's own loop."""
        await self._close()
        self._builders.shutdown(wait=False, cancel_futures=True)

    # On the runtime loop.

    def _warm_pool(self, endpoint: EndpointDef) -> Pool | None:
        """The endpoint's pool if a call can go straight to it (else ``_submit`` prepares it)."""
        pool = self._endpoint_pools.get(endpoint)
        if pool is None or self._closing:
            return None
        if endpoint.dependencies and self._local_sources_changed(endpoint):
            return None
        return pool

    def _begin(
        self, endpoint: EndpointDef, call: Call, relayed: Callable[[], hops.Relayed]
    ) -> tuple[Pool | None, asyncio.Future[Reply]]:
        """A call from another loop started here (hops.across): on a warm pool, sent now."""
        pool = self._warm_pool(endpoint)
        if pool is None:
            return None, asyncio.ensure_future(self._submit(endpoint, call))
        return pool, pool.start(call, relayed)

    async def _submit(self, endpoint: EndpointDef, call: Call) -> Reply:
        if self._closing:  # e.g. a nested call from a worker that is being stopped
            raise FlashError(
                f"endpoint {endpoint.name!r}: {call.label} arrived while openflash was stopping",
                hint="the openflash runtime is stopping; start a new process",
            )
        pool = self._endpoint_pools.get(endpoint)
        if pool is None or self._local_sources_changed(endpoint):
            pool = await self._pool_for(endpoint)
            key = self._endpoint_keys.get(endpoint)
            if self.progress is not None and key is not None:  # a first call: its worker starts
                return await self.progress.until_started(_label(key), pool.submit(call))
        return await pool.submit(call)

    def _local_sources_changed(self, endpoint: EndpointDef) -> bool:
        """Whether a local wheel, sdist or project the endpoint names changed since its pool was
        prepared (a rebuilt wheel is a new environment at the next call)."""
        if not any("file:" in spec for spec in endpoint.dependencies):
            return False
        return self._endpoint_keys.get(endpoint) != self._deps_key(endpoint)

    async def _pool_for(self, endpoint: EndpointDef) -> Pool:
        # Inside an image `flash build` made (FLASH_PREBUILT_ENV), the image is already here.
        if endpoint.resource.image and self.settings.prebuilt_env is None:
            return await self._image_pool(endpoint)
        key = self._endpoint_keys[endpoint] = self._deps_key(endpoint)
        if key.lockfile is not None and endpoint.name not in self._stale_warned:
            stale = self.preparer.stale_entry(key, endpoint.name)
            if stale is not None:
                self._stale_warned.add(endpoint.name)
                logger.warning(
                    "openflash: endpoint %r no longer matches %s (locked %s, now %s); it is "
                    "resolved afresh. Run `flash lock` to lock it again.",
                    endpoint.name,
                    key.lockfile,
                    list(stale.dependencies),
                    list(key.python),
                )
        prepared = await self._prepare(key)
        env = prepared.environment if self.backend.builds_locally else None
        record = learned_record(endpoint.name, env.path, endpoint.project) if env else None
        spec = worker_spec(
            endpoint, prepared, self.settings, record, local=self.backend.builds_locally
        )
        config = endpoint.pool_config()
        # One pool per endpoint name, environment and layer; a changed config is a new pool.
        layer = prepared.layer.key or (prepared.system_lock.key if prepared.system_lock else "")
        pool_key = PoolKey.of(config, spec, environment=prepared.env_key, layer=layer)
        pool = self._pools.get(pool_key)
        if pool is None:
            pool = self._pools[pool_key] = Pool(
                config,
                self.backend,
                spec,
                nested=self.nested,
                waits=self.waits,
                on_imports=recorder(record) if record else None,
            )
            pool.lend = lending.lend
            self.preparer.record_use(endpoint.name, prepared)
        self._endpoint_pools[endpoint] = pool
        return pool

    async def _image_pool(self, endpoint: EndpointDef) -> Pool:
        """A pool of containers of the endpoint's image (derived with its dependencies): here,
        or on the Ray node that runs each worker, from the lock resolved here."""
        image = endpoint.resource.image
        assert image is not None  # _pool_for sends only image endpoints here
        if not self.backend.builds_locally:
            deps = DependencyKey(endpoint.dependencies, (), endpoint.lockfile)
            target = ray_image_target(endpoint, await self._prepare(deps))
            return self._pool_of(endpoint, image_spec(endpoint, target, self.settings))
        key = ImageKey(image, self._deps_key(endpoint))
        future = self._images.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(
                self._builders,
                lambda: prepare_image_endpoint(endpoint, self.preparer),
            )
            self._images[key] = future
        try:
            ready = await asyncio.shield(future)
        except BaseException:
            if self._images.get(key) is future and future.done():
                del self._images[key]  # the next call tries again
            raise
        return self._pool_of(
            endpoint, image_spec(endpoint, local_image_target(ready), self.settings)
        )

    def _pool_of(self, endpoint: EndpointDef, spec: WorkerSpec) -> Pool:
        """The pool of an image endpoint's workers (made on first use)."""
        config = endpoint.pool_config()
        pool_key = PoolKey.of(config, spec)
        pool = self._pools.get(pool_key)
        if pool is None:
            pool = self._pools[pool_key] = Pool(
                config, self.backend, spec, nested=self.nested, waits=self.waits
            )
            pool.lend = lending.lend
        self._endpoint_pools[endpoint] = pool
        return pool

    async def _prepare(self, dependencies: DependencyKey) -> Prepared:
        future = self._prepared.get(dependencies)
        if future is None:
            future = self._prepared[dependencies] = asyncio.ensure_future(self._build(dependencies))
            # Its error reaches every caller; one nobody awaits any more (a stop) is not logged.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.shield(future)
        except BaseException:
            if self._prepared.get(dependencies) is future and future.done():
                del self._prepared[dependencies]  # the next call tries again
            raise

    async def _build(self, dependencies: DependencyKey) -> Prepared:
        loop = asyncio.get_running_loop()
        local = self.backend.builds_locally

        def build() -> Prepared:
            if self.progress is None:
                return self.preparer.build(dependencies, local=local)
            with self.progress.showing(_label(dependencies)):
                return self.preparer.build(dependencies, local=local)

        return await loop.run_in_executor(self._builders, build)

    async def _refresh(self, endpoints: list[EndpointDef]) -> list[str]:
        results = await asyncio.gather(
            *(self._pool_for(e) for e in endpoints), return_exceptions=True
        )
        current = {id(p) for p in results if isinstance(p, Pool)}
        for pool in results:
            if isinstance(pool, Pool):
                pool.warm()  # workersMin workers run from the start, as on Runpod
        failed = {
            e.name for e, p in zip(endpoints, results, strict=True) if not isinstance(p, Pool)
        }
        names = {e.name for e in endpoints} - failed  # keep the old pool while the new one fails
        retired = []
        for key, pool in list(self._pools.items()):
            if pool.config.name in names and id(pool) not in current:
                del self._pools[key]
                for endpoint, used in list(self._endpoint_pools.items()):
                    if used is pool:
                        del self._endpoint_pools[endpoint]
                retired.append(pool.config.name)
                pool.retire(self._retiring)
        return retired

    async def _close(self) -> None:
        self._closing = True
        pools = [*self._pools.values(), *self._retiring]
        self._pools.clear()
        self._endpoint_pools.clear()
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)
        if self.progress is not None:
            self.progress.close()
        self.preparer.release()
        await self.backend.close()


async def _stats(pool: Pool) -> dict[str, object]:
    return pool.stats()


def _label(dependencies: DependencyKey) -> str:
    """How a build is named in progress lines: its sets, shortened."""
    what = " ".join(dependencies.python + dependencies.system) or "no dependencies"
    return what if len(what) <= 48 else what[:47] + "…"
