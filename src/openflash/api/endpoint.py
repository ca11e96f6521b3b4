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
from dataclasses import dataclass
from typing import Any, TypeVar

from openflash.api.remote import RemoteFunction, _decorator, _reject_unknown
from openflash.api.retries import Retries, retry_policy
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

__all__ = ["RESERVED_PATHS", "Endpoint", "Route"]

F = TypeVar("F", bound=Callable[..., Any])

#: Paths the serving framework keeps for itself on a load-balanced endpoint.
RESERVED_PATHS = frozenset({"/execute", "/ping"})


@dataclass(frozen=True)
class Route:
    """One handler of a load-balanced endpoint: ``method path`` runs ``handle`` on a worker."""

    method: str
    path: str
    function: Callable[..., Any]
    handle: RemoteFunction


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


class Endpoint:
    """An endpoint: its hardware, scaling and dependencies; decorate a function or class with it."""

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
        if id is not None:
            raise ConfigError(
                f"Endpoint(id={id!r}) calls an endpoint deployed on Runpod's cloud, which "
                "openflash does not reach",
                hint="decorate the function with Endpoint(name=...) to run it locally",
            )
        if gpu is not None and cpu is not None:
            raise ConfigError(
                "gpu and cpu are mutually exclusive: specify one or neither",
                hint="use gpu=... for a GPU endpoint or cpu=... for a CPU one",
            )
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(
                f"max_concurrency must be >= 1, got {max_concurrency!r}",
                hint="max_concurrency is how many calls one worker runs at once",
            )
        self.name = name
        self.gpu = _gpus(gpu)
        self.cpu = _cpus(cpu)
        self.workers_min, self.workers_max = _workers(workers)
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
        if name is not None:
            self._resource(name)  # invalid values fail here, not at decoration

    @property
    def is_cpu(self) -> bool:
        return self.cpu is not None

    @property
    def is_load_balanced(self) -> bool:
        return bool(self.routes)

    # The route form (load-balanced): @api.post("/path") on handlers of one endpoint.

    def get(self, path: str) -> Callable[[F], F]:
        return self._route("GET", path)

    def post(self, path: str) -> Callable[[F], F]:
        return self._route("POST", path)

    def put(self, path: str) -> Callable[[F], F]:
        return self._route("PUT", path)

    def delete(self, path: str) -> Callable[[F], F]:
        return self._route("DELETE", path)

    def patch(self, path: str) -> Callable[[F], F]:
        return self._route("PATCH", path)

    def _route(self, method: str, path: str) -> Callable[[F], F]:
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
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"route path {path!r} must start with '/'", hint="e.g. '/process'")
        if path.rstrip("/") in RESERVED_PATHS:
            raise ConfigError(
                f"route path {path!r} of endpoint {self.name!r} is reserved",
                hint=f"reserved paths: {', '.join(sorted(RESERVED_PATHS))}; pick another",
            )
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
            self.routes.append(Route(method, path, fn, handle))
            # Marker attributes on the user's function (F promises no such attributes).
            fn.__remote_config__ = handle.__remote_config__  # type: ignore[attr-defined]
            fn.__is_lb_route_handler__ = True  # type: ignore[attr-defined]
            # Awaiting the handler (from a script, or from another endpoint's function) runs it
            # on this endpoint's workers, as a queue-style function's call does.
            handle.__is_lb_route_handler__ = True
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

    def __repr__(self) -> str:
        kind = f"cpu={[c.value for c in self.cpu]}" if self.cpu else "gpu"
        workers = (self.workers_min, self.workers_max)
        return f"Endpoint(name={self.name!r}, {kind}, workers={workers})"


def _gpus(gpu: Any) -> list[GpuGroup | GpuType] | None:
    if gpu is None:
        return None
    items = list(gpu) if isinstance(gpu, (list, tuple)) else [gpu]
    for item in items:
        if not isinstance(item, (GpuGroup, GpuType)):
            raise ConfigError(
                f"gpu must be a GpuGroup, a GpuType or a list of them, got {item!r}",
                hint="e.g. gpu=GpuGroup.ADA_24 or gpu=GpuType.NVIDIA_L4",
            )
    return items


def _cpus(cpu: Any) -> list[CpuInstanceType] | None:
    if cpu is None:
        return None
    items = list(cpu) if isinstance(cpu, (list, tuple)) else [cpu]
    result = []
    valid = [c.value for c in CpuInstanceType]
    for item in items:
        try:
            result.append(CpuInstanceType(item))
        except ValueError:
            raise ConfigError(
                f"cpu={item!r} is not a CPU instance type",
                hint=f"use a CpuInstanceType member or one of {valid}",
            ) from None
    return result


def _workers(workers: Any) -> tuple[int, int]:
    if workers is None:
        return 0, 1
    if isinstance(workers, bool):
        pass
    elif isinstance(workers, int):
        low, high = 0, workers
        if high < 1:
            raise ConfigError(
                f"workers={workers} must be at least 1",
                hint="workers=N means up to N workers; (min, max) sets both",
            )
        return low, high
    elif isinstance(workers, (tuple, list)) and len(workers) == 2:
        low, high = workers
        if isinstance(low, int) and isinstance(high, int):
            if low < 0 or high < 1 or low > high:
                raise ConfigError(
                    f"workers=({low}, {high}) is not a valid (min, max) range",
                    hint="use 0 <= min <= max and max >= 1, e.g. workers=(0, 3)",
                )
            return low, high
    raise ConfigError(
        f"workers must be an int or a (min, max) tuple, got {workers!r}",
        hint="e.g. workers=3 or workers=(1, 3)",
    )
