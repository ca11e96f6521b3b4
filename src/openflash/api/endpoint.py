"""``Endpoint``: the newer form. Used as a decorator it is a queue-style endpoint:

    @Endpoint(name="data", cpu=CpuInstanceType.CPU3C_2_4, workers=(0, 3), dependencies=["pandas"])
    async def process(data: dict) -> dict: ...

Used as an object it holds the routes of a load-balanced endpoint, whose handlers share its
workers (``flash run`` serves them over HTTP; awaiting one in Python runs it on those workers):

    api = Endpoint(name="api", cpu=CpuInstanceType.CPU3C_1_2, workers=(1, 3))

    @api.post("/summarize")
    async def summarize(text: str) -> dict: ...

``workers=N`` means (0, N); a tuple is (min, max). ``gpu`` and ``cpu`` are exclusive; with neither
the endpoint asks for any GPU, as in Runpod Flash.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from openflash.api.endpoint_args import cpus, gpus, workers_range
from openflash.api.remote import RemoteFunction, _decorator, _reject_unknown
from openflash.api.retries import Retries, retry_policy
from openflash.api.routing import RESERVED_PATHS, Route, check_route
from openflash.config.hardware import CpuInstanceType, GpuGroup, GpuType
from openflash.config.resources import (
    CpuLiveLoadBalancer,
    CpuLiveServerless,
    CpuLoadBalancerSlsResource,
    CpuServerlessEndpoint,
    LiveLoadBalancer,
    LiveServerless,
    LoadBalancerSlsResource,
    NetworkVolume,
    ServerlessEndpoint,
    ServerlessResource,
)
from openflash.envs.uv_options import OPTION_NAMES
from openflash.errors import ConfigError
from openflash.runtime.preload import normalize_preload
from openflash.workers.serverless_client import ClientCall, ClientMode, EndpointAddress

__all__ = ["RESERVED_PATHS", "Endpoint", "Route"]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("openflash")

_PARAMETERS = (
    "name",
    "gpu",
    "cpu",
    "workers",
    "idle_timeout",
    "dependencies",
    "system_dependencies",
    "env",
    "gpu_count",
    "execution_timeout_ms",
    "max_concurrency",
    "image",
    "id",
    "url",
    "preload",
    "volume",
    "retries",
)
#: Runpod Flash arguments that only mean something on Runpod's cloud: accepted, ignored.
_CLOUD_ONLY = (
    "accelerate_downloads",
    "datacenter",
    "flashboot",
    "scaler_type",
    "scaler_value",
    "template",
    "min_cuda_version",
    "unrestricted_locations",
)


class Endpoint(ClientMode):
    """An endpoint: its hardware, scaling and dependencies; decorate a function or class with it.

    Client mode (Runpod Flash's ``Endpoint(id=...)`` and ``Endpoint(image=...)``): with ``id=``
    (an endpoint's name on a ``flash run``, found at FLASH_SERVER_URL, default
    http://localhost:8888) or ``url=`` (any base URL of Runpod's serverless API), it is a client
    of an endpoint served elsewhere; with ``image=`` and no function to decorate, a client of the
    image's own server, run as a container (runtime/image_servers.py). A client's coroutines
    ``run``, ``runsync``, ``status``, ``cancel`` (returning an ``EndpointJob``), ``health`` and
    ``purge_queue`` make queue calls, and ``await ep.post(path, data)`` (get, put, delete,
    patch) calls a load-balanced route (workers/serverless_client.py).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        gpu: GpuGroup | GpuType | list[GpuGroup | GpuType] | None = None,
        cpu: CpuInstanceType | str | list[CpuInstanceType | str] | None = None,
        workers: int | tuple[int, int] | None = None,
        idle_timeout: int = 60,
        dependencies: Iterable[str] | None = None,
        system_dependencies: Iterable[str] | None = None,
        env: Mapping[str, str] | None = None,
        gpu_count: int = 1,
        execution_timeout_ms: int = 0,
        max_concurrency: int = 1,
        image: str | None = None,
        id: str | None = None,
        url: str | None = None,
        preload: Iterable[str] | None = None,
        volume: NetworkVolume | str | None = None,
        retries: int | Retries | None = None,
        **extra: Any,
    ) -> None:
        cloud = {k: extra.pop(k) for k in list(extra) if k in _CLOUD_ONLY}
        #: Install options (openflash extensions, as remote()'s: envs/uv_options.py).
        #: ``requirements`` (a pip requirements file added to ``dependencies``) travels with them.
        wanted = (*OPTION_NAMES, "requirements")
        self.install = {k: extra.pop(k) for k in list(extra) if k in wanted}
        _reject_unknown("Endpoint", extra, (*_PARAMETERS, *wanted, *_CLOUD_ONLY))
        for key, value in cloud.items():
            logger.debug("Endpoint(%s=%r) only applies on Runpod's cloud; ignored", key, value)
        given = [k for k, v in (("id", id), ("url", url), ("image", image)) if v is not None]
        if len(given) > 1:
            raise ConfigError(
                f"Endpoint({'=..., '.join(given)}=...): these are exclusive",
                hint="id= or url= calls an endpoint served elsewhere, image= runs an image's "
                "server; give one",
            )
        #: Where a client's calls go (id= or url=); an image's server is found when first called.
        self.address = (
            EndpointAddress.of(id=id, url=url) if given[:1] in (["id"], ["url"]) else None
        )
        self.id, self.url = id, url
        if gpu is not None and cpu is not None:
            raise ConfigError(
                "gpu and cpu are mutually exclusive: specify one or neither",
                hint="use gpu=... for a GPU endpoint or cpu=... for a CPU one",
            )
        if (
            not isinstance(max_concurrency, int)
            or isinstance(max_concurrency, bool)
            or not 1 <= max_concurrency <= 1000
        ):
            raise ConfigError(
                f"max_concurrency must be >= 1, got {max_concurrency!r} (a number up to 1000)",
                hint="max_concurrency is how many calls one worker runs at once",
            )
        self.name = name
        self.gpu = gpus(gpu)
        self.cpu = cpus(cpu)
        self.workers_min, self.workers_max = workers_range(workers)
        self.idle_timeout = idle_timeout
        self.dependencies = list(dependencies) if dependencies is not None else None
        self.system_dependencies = (
            list(system_dependencies) if system_dependencies is not None else None
        )
        self.env = dict(env) if env is not None else None
        self.gpu_count = gpu_count
        self.execution_timeout_ms = execution_timeout_ms
        self.max_concurrency = max_concurrency
        self.image = image
        self.preload = normalize_preload(preload)
        self.retries = retry_policy(retries)  # api/retries.py
        #: The volume its workers see at /runpod-volume (a name is a NetworkVolume's).
        self.volume = NetworkVolume(name=volume) if isinstance(volume, str) else volume
        self.routes: list[Route] = []
        self._decorated = False
        if name is not None and self.address is None:
            self._resource(name)  # invalid values fail here, not at decoration

    @property
    def is_cpu(self) -> bool:
        return self.cpu is not None

    @property
    def is_load_balanced(self) -> bool:
        return bool(self.routes)

    @property
    def is_client(self) -> bool:
        """A client of an endpoint served elsewhere (id= or url=) or of an image's server."""
        return self.address is not None or (self.image is not None and not self._decorated)

    # The route form (load-balanced): @api.post("/path") on handlers of one endpoint; on a
    # client, await api.post("/path", data) calls the route.

    def get(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        return self._verb("GET", path, data, kwargs)

    def post(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        return self._verb("POST", path, data, kwargs)

    def put(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        return self._verb("PUT", path, data, kwargs)

    def delete(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        return self._verb("DELETE", path, data, kwargs)

    def patch(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        return self._verb("PATCH", path, data, kwargs)

    def _verb(self, method: str, path: str, data: Any, kwargs: dict[str, Any]) -> Any:
        if self.address is not None or (self.image is not None and (data is not None or kwargs)):
            return self._client_call(method, path, data, kwargs)
        local = kwargs.pop("local", False)
        if data is not None or kwargs:
            raise ConfigError(
                f"{method.lower()}({path!r}, ...): data and {sorted(kwargs) or 'keywords'} only "
                "go with a client endpoint (Endpoint(id=...), url= or image=)",
                hint=f"to declare a route write @api.{method.lower()}({path!r}) (local=True "
                "runs it in the serving process)",
            )
        if self.image is not None:  # a route of the image's endpoint, or a call to its server
            call = self._client_call(method, path, None, {})
            return _RouteOrCall(lambda fn: self._route(method, path, local)(fn), call)
        return self._route(method, path, local)

    def _route(self, method: str, path: str, local: bool = False) -> Callable[[F], F]:
        if self.name is None:
            raise ConfigError(
                f"{method.lower()}({path!r}): a load-balanced endpoint needs a name",
                hint="create it as Endpoint(name='my-api', ...)",
            )
        if self._decorated:
            raise ConfigError(
                f"endpoint {self.name!r} was used as a direct decorator; it cannot have routes",
                hint="use one Endpoint per style: @Endpoint(...) or api = Endpoint(...); @api.post",
            )
        method = check_route(method, path, self.name, f"{method.lower()}({path!r})")
        for route in self.routes:
            if (route.method, route.path) == (method, path):
                raise ConfigError(
                    f"duplicate route {method} {path} on endpoint {self.name!r} (already "
                    f"{route.function.__name__})",
                    hint="give each handler its own method and path",
                )

        def register(fn: F) -> F:
            if inspect.isclass(fn) or not callable(fn):
                raise ConfigError(
                    f"@{method.lower()}({path!r}) decorates functions, not {fn!r}",
                    hint="put it directly above a def or an async def",
                )
            assert self.name is not None
            resource = self._resource(self.name, load_balanced=True)
            handle: RemoteFunction = _decorator(
                resource,
                self.dependencies,
                self.system_dependencies,
                False,
                self.max_concurrency,
                self.preload,
                self.retries,
                install=self.install,
                where="Endpoint()",
            )(fn)
            self.routes.append(Route(method, path, fn, handle, local=bool(local)))
            # Marker attributes on the user's function (F promises no such attributes).
            fn.__remote_config__ = handle.__remote_config__  # type: ignore[attr-defined]
            fn.__is_lb_route_handler__ = True  # type: ignore[attr-defined]
            # Awaiting the handler (from a script, or from another endpoint's function) runs it
            # on this endpoint's workers, as a queue-style function's call does.
            handle.__is_lb_route_handler__ = True
            if local:  # as remote(local=True): the function itself, run where it is called
                fn.__flash_local__ = True  # type: ignore[attr-defined]
                return fn
            # The handle stands in for the function: called the same way, awaited for its result.
            return handle  # type: ignore[return-value]

        return register

    def _resource(self, name: str, *, load_balanced: bool = False) -> ServerlessResource:
        fields: dict[str, Any] = {
            "name": name,
            "workersMin": self.workers_min,
            "workersMax": self.workers_max,
            "idleTimeout": self.idle_timeout,
            "executionTimeoutMs": self.execution_timeout_ms,
            "env": self.env,
        }
        if self.volume is not None:
            fields["networkVolume"] = self.volume
        if self.image:
            fields["imageName"] = self.image
        live = not self.image
        if self.cpu is not None:
            cls: type[ServerlessResource] = {
                (True, True): CpuLiveLoadBalancer,
                (True, False): CpuLiveServerless,
                (False, True): CpuLoadBalancerSlsResource,
                (False, False): CpuServerlessEndpoint,
            }[(live, load_balanced)]
            return cls(instanceIds=self.cpu, **fields)
        cls = {
            (True, True): LiveLoadBalancer,
            (True, False): LiveServerless,
            (False, True): LoadBalancerSlsResource,
            (False, False): ServerlessEndpoint,
        }[(live, load_balanced)]
        return cls(gpus=self.gpu or [GpuGroup.ANY], gpuCount=self.gpu_count, **fields)

    def __call__(self, obj: Any) -> Any:
        if self.address is not None:
            raise ConfigError(
                f"{self.address.label} is a client of an endpoint served elsewhere; it cannot "
                f"decorate {getattr(obj, '__name__', obj)!r}",
                hint="decorate with Endpoint(name=...) to run your code; use this one to call "
                "the other endpoint (await ep.runsync(...))",
            )
        if self.routes:
            raise ConfigError(
                f"endpoint {self.name!r} has routes ({self.routes[0].method} "
                f"{self.routes[0].path}); it cannot also be used as a direct decorator",
                hint="use one Endpoint per style: @Endpoint(...) or api = Endpoint(...); @api.post",
            )
        self._decorated = True
        name = self.name or getattr(obj, "__name__", None)
        if not name:
            raise ConfigError(
                f"cannot name an endpoint for {obj!r}", hint="pass Endpoint(name=...)"
            )
        decorate = _decorator(
            self._resource(name),
            self.dependencies,
            self.system_dependencies,
            False,
            self.max_concurrency,
            self.preload,
            self.retries,
            install=self.install,
            where="Endpoint()",
        )
        return decorate(obj)

    async def _address(self) -> EndpointAddress:
        if self.address is not None:
            return self.address
        if self.image is None or self._decorated:
            raise ConfigError(
                f"endpoint {self.name!r} is not a client: run/runsync/status belong to "
                "Endpoint(id=...), url= or image=",
                hint="call the decorated function itself (await fn(...)), or create a client "
                f"with Endpoint(id={self.name!r}) against a flash run that serves it",
            )
        from openflash.runtime.image_servers import image_server

        return await image_server(self.name, self.image, self.env)

    def _client_label(self) -> str:
        return self.address.label if self.address else f"Endpoint(image={self.image!r})"

    def __repr__(self) -> str:
        if self.address is not None:
            return self.address.label
        kind = f"cpu={[c.value for c in self.cpu]}" if self.cpu else "gpu"
        workers = (self.workers_min, self.workers_max)
        return f"Endpoint(name={self.name!r}, {kind}, workers={workers})"


class _RouteOrCall:
    """``api.get(path)`` on an endpoint with an ``image``: a route decorator for its handlers
    (they run in that image), or, awaited, a call to the image's server at ``path``."""

    def __init__(self, register: Callable[[Any], Any], call: ClientCall) -> None:
        self._register, self._call = register, call

    def __call__(self, fn: Any) -> Any:
        return self._register(fn)

    def __await__(self) -> Any:
        return self._call.__await__()


# A function that uses Endpoint (a client made in its body) travels to workers with a reference
# to it: by its public name, which inside a worker is the light client's Endpoint.
Endpoint.__module__ = "openflash"
