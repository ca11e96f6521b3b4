"""``remote``: the original decorator, for functions (async or not) and classes.

Calling a decorated function returns an awaitable that runs it on a worker of its endpoint, whose
environment holds exactly the declared dependencies. A decorated class returns instances whose
method calls run on one worker that holds the instance.
"""

from __future__ import annotations

import copyreg
import difflib
import functools
import hashlib
import inspect
import os
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from openflash.api import dispatch, streams, values
from openflash.api.requirements import install_options
from openflash.api.retries import Retries, retried, retry_policy
from openflash.api.routing import route_form
from openflash.api.shipping import register_by_value, shippable, source_dir
from openflash.config.resources import CpuLiveServerless, ServerlessResource
from openflash.deps.specs import normalize_system_dependencies
from openflash.envs.uv_options import OPTION_NAMES
from openflash.errors import ConfigError, FlashError
from openflash.runtime import nested_calls as nested
from openflash.runtime.definitions import EndpointDef
from openflash.runtime.preload import imported_modules, normalize_preload
from openflash.workers import client, flash_apps, protocol
from openflash.workers.calls import Call
from openflash.workers.fanning import FanOut, Method, window_for

__all__ = ["RemoteClass", "RemoteFunction", "RemoteInstance", "remote"]

_REMOTE_PARAMETERS = (
    "resource_config",
    "dependencies",
    "system_dependencies",
    "accelerate_downloads",
    "local",
    "method",
    "path",
    "preload",
    "requirements",
    *OPTION_NAMES,
    "retries",
)


def remote(
    resource_config: ServerlessResource | None = None,
    dependencies: Iterable[str] | None = None,
    system_dependencies: Iterable[str] | None = None,
    accelerate_downloads: bool = True,
    local: bool = False,
    preload: Iterable[str] | None = None,
    retries: int | Retries | None = None,
    *,
    method: str | None = None,
    path: str | None = None,
    requirements: str | os.PathLike[str] | None = None,
    index_url: str | None = None,
    extra_index_urls: Iterable[str] | None = None,
    find_links: Iterable[str] | None = None,
    torch_backend: str | None = None,
    extra_build_dependencies: Mapping[str, Iterable[str]] | None = None,
    no_build_isolation: bool | Iterable[str] | None = None,
    prerelease: str | None = None,
    **unknown: Any,
) -> Callable[[Any], Any]:
    """Run the decorated function or class on a worker with exactly these dependencies.

    Without ``resource_config`` the function gets a CPU endpoint named after it.
    ``dependencies`` are PEP 508 strings (or local wheel paths), validated now; they are resolved
    with uv and installed into a cached environment at the first call. ``system_dependencies``
    are Debian package names. ``local=True`` leaves the object as it is: it runs in-process.
    ``requirements`` names a pip requirements file (relative to the decorated file) whose
    requirements are added to ``dependencies``, read as ``openflash.requirements()`` reads it.
    ``accelerate_downloads`` is accepted for compatibility (downloads are always cached here).
    ``preload`` names modules for the endpoint's worker template to import before it forks
    workers, beyond those the function's code imports (found by reading it).

    Install options (openflash extensions; defaults from ``[tool.openflash]`` in the project's
    pyproject.toml): ``index_url``, ``extra_index_urls`` and ``find_links`` (uv's
    ``--index-url``, ``--extra-index-url``, ``--find-links``; credentials in URLs are never
    shown), ``torch_backend`` (uv's ``--torch-backend``), ``extra_build_dependencies`` (uv's
    ``extra-build-dependencies``: ``{"flash-attn": ["torch"]}``), ``no_build_isolation`` (True, or
    package names) and ``prerelease`` (uv's ``--prerelease`` strategy).
    ``retries`` (an int or ``Retries``) sends a failed call again (api/retries.py).
    ``method`` and ``path`` with a load-balancer config (``LiveLoadBalancer``, ...) make the
    function a route of that endpoint, Runpod Flash's older route form (api/routing.py).
    """
    _reject_unknown("remote", unknown, _REMOTE_PARAMETERS)
    install = {
        "requirements": requirements,
        "index_url": index_url,
        "extra_index_urls": extra_index_urls,
        "find_links": find_links,
        "torch_backend": torch_backend,
        "extra_build_dependencies": extra_build_dependencies,
        "no_build_isolation": no_build_isolation,
        "prerelease": prerelease,
    }
    decorate = _decorator(
        resource_config, dependencies, system_dependencies, local, 1, preload, retries,
        install=install,
    )  # fmt: skip
    if method is None and path is None:
        return decorate
    # Runpod Flash's older route form: a route of a load-balanced endpoint (api/routing.py).
    routed = _decorator(
        resource_config, dependencies, system_dependencies, False, 1, preload, retries,
        install=install,
    )  # fmt: skip
    return route_form(resource_config, method, path, local, routed, decorate)


def _decorator(
    resource_config: ServerlessResource | None,
    dependencies: Iterable[str] | None,
    system_dependencies: Iterable[str] | None,
    local: bool,
    max_concurrency: int,
    preload: Iterable[str] | None = None,
    retries: int | Retries | None = None,
    *,
    install: Mapping[str, Any] | None = None,
    where: str = "remote()",
) -> Callable[[Any], Any]:
    if resource_config is not None and not isinstance(resource_config, ServerlessResource):
        raise ConfigError(
            f"resource_config must be a resource config, got {resource_config!r}",
            hint="pass one such as LiveServerless(name='my-worker') or "
            "CpuLiveServerless(name='my-worker')",
        )
    system = normalize_system_dependencies(system_dependencies)
    explicit = normalize_preload(preload)
    policy = retry_policy(retries)

    def decorate(obj: Any) -> Any:
        if not (inspect.isclass(obj) or callable(obj)):
            raise ConfigError(
                f"@remote decorates functions and classes, not {type(obj).__name__}",
                hint="put @remote(...) directly above a def, an async def or a class",
            )
        deps, options = install_options(dependencies, install or {}, source_dir(obj), where)
        # Without a config (as in the user guide's `@remote(dependencies=[...])`), the function
        # gets a CPU endpoint of its own name.
        resource = resource_config or CpuLiveServerless(name=obj.__name__)
        config = {
            "resource_config": resource,
            "dependencies": list(deps),
            "system_dependencies": list(system),
        }
        if local:
            obj.__remote_config__ = config
            obj.__flash_local__ = True
            return obj
        imports = imported_modules(obj)
        endpoint = EndpointDef(
            name=resource.name,
            resource=resource,
            dependencies=deps,
            system_dependencies=system,
            max_concurrency=max_concurrency,
            source_dir=source_dir(obj),
            options=options,
            preload=tuple(dict.fromkeys([*explicit, *imports])),
            imports=imports,
        )
        handle = (
            RemoteClass(obj, endpoint) if inspect.isclass(obj) else RemoteFunction(obj, endpoint)
        )
        handle.__remote_config__ = config
        handle._retries = policy
        return handle

    return decorate


class _Remote:
    """What function and class handles share: pickling the object once, calling the runtime."""

    __wrapped__: Any
    __name__: str
    __qualname__: str
    __remote_config__: dict[str, Any]
    _retries: Retries | None = None

    def __init__(self, obj: Any, endpoint: EndpointDef) -> None:
        functools.update_wrapper(self, obj, updated=())  # type: ignore[arg-type]
        self.endpoint = endpoint
        self._blob: bytes | None = None
        self._target = ""
        #: Top-level modules the endpoint's workers said they lack (arguments go portable).
        self._lacks: set[str] = set()
        try:
            self._source: str | None = inspect.getsourcefile(obj)
        except TypeError:
            self._source = None
        # Workers name it by file and qualified name: when they import its module (their light
        # client decorates it there), and when it reaches them pickled.
        self._file = nested.source_file(obj)
        self._streams = not inspect.isclass(obj) and streams.streams(obj)  # at decoration
        if self._file:
            nested.register(self._file, obj.__qualname__, self)

    def _payload(self) -> tuple[str, bytes]:
        if self._blob is None:
            obj = shippable(self.__wrapped__)
            register_by_value(obj)
            try:
                blob = values.dumps(obj)
            except Exception as e:
                raise FlashError(
                    f"{self._label()} cannot be sent to a worker: {e}",
                    hint="objects it uses from module level (clients, locks, open files) must be "
                    "picklable; create them inside the function instead",
                ) from e
            self._blob = blob
            self._target = hashlib.sha256(blob).hexdigest()[:20]
        return self._target, self._blob

    def _label(self) -> str:
        return f"{self.__name__}()"

    def _fan_window(self) -> int:
        return window_for(self.endpoint.resource.workersMax, self.endpoint.max_concurrency)

    def __reduce__(self) -> Any:
        # Inside a worker, a handle is the light client's: calling it goes through the parent.
        if not self._file:
            raise FlashError(
                f"{self._label()} is an openflash endpoint defined without a source file, and "
                "cannot be sent to a worker",
                hint="define it in a module or a script, not in an interactive session",
            )
        kind = "RemoteClass" if inspect.isclass(self.__wrapped__) else "RemoteFunction"
        return (client.reference, (self._file, self.__qualname__, self._label(), kind))

    def __repr__(self) -> str:
        return f"<remote {self.__qualname__} on endpoint {self.endpoint.name!r}>"


class RemoteFunction(_Remote, FanOut):
    """A decorated function; calling it returns an awaitable of its result. ``map``,
    ``starmap``, ``spawn`` and ``spawn_map`` fan it out (workers/fanning.py)."""

    #: Set (True) on the handle of a load-balanced endpoint's route.
    __is_lb_route_handler__: bool

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        target, blob = self._payload()
        label = self._label()
        endpoint = self.endpoint

        def make_call() -> Call:
            packed = values.dump_arguments(
                self.__wrapped__, label, endpoint.name, args, kwargs, self._lacks
            )
            return Call(protocol.OP_FUNCTION, target, blob, packed, label, self._source)

        if self._streams or self._retries is not None or streams.progress_sink.get() is not None:
            return _start(endpoint, make_call, make_call, self._lacks, self._streams, self)
        return dispatch.run(endpoint, make_call(), make_call, self._lacks)  # the plain call


class RemoteClass(_Remote, type):
    """A decorated class, still a class; its instances' methods run on a worker."""

    def __new__(mcs, obj: Any, endpoint: EndpointDef) -> RemoteClass:
        return type.__new__(mcs, obj.__name__, (RemoteInstance,), {})  # named in __init__

    def __call__(cls, *args: Any, **kwargs: Any) -> RemoteInstance:
        instance: RemoteInstance = object.__new__(cls)  # type: ignore[arg-type]
        instance._setup(cls, _dump_args(cls, args, kwargs), (args, kwargs))
        return instance

    def __getattr__(cls, name: str) -> Any:  # class attributes and methods
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(cls.__dict__["__wrapped__"], name)

    def _label(cls) -> str:
        return cls.__name__


class RemoteInstance:
    """An instance of a decorated class, created on a worker at its first method call."""

    def _setup(
        self,
        cls: RemoteClass,
        init_args: protocol.Packed,
        raw: tuple[tuple[Any, ...], dict[str, Any]],
    ) -> None:
        self._cls = cls
        self._init_args = init_args
        self._init_raw = raw
        self._id = uuid.uuid4().hex
        weakref.finalize(self, dispatch.release, cls.endpoint, self._id)

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):  # private and special names are not remote methods
            raise AttributeError(name)
        attr = getattr(self._cls.__wrapped__, name, None)
        if not callable(attr):
            raise AttributeError(
                f"{self._cls.__name__!r} has no method {name!r}; only methods can be called "
                "on a remote instance"
            )

        def method(*args: Any, **kwargs: Any) -> Any:
            cls = self._cls
            __, blob = cls._payload()

            def make_call(again: bool = True) -> Call:
                if again:
                    self._init_args = _dump_args(cls, *self._init_raw)
                return Call(
                    protocol.OP_METHOD,
                    self._id,
                    blob,
                    _dump_args(cls, args, kwargs, getattr(cls.__wrapped__, name)),
                    label=f"{cls.__name__}.{name}()",
                    method=name,
                    init_args=self._init_args,
                    source=cls._source,
                )

            gen = streams.streams(attr)
            return _start(cls.endpoint, lambda: make_call(False), make_call, cls._lacks, gen, cls)

        window = self._cls._fan_window()
        return Method(method, name, f"{self._cls.__name__}.{name}()", window)

    def __reduce__(self) -> Any:
        # Inside a worker, the same instance: its method calls go through the parent to the
        # worker that holds it.
        cls = self._cls
        _Remote.__reduce__(cls)  # the same checks as for the class
        return (client.instance_reference, (cls._file, cls.__qualname__, self._init_args, self._id))

    def __repr__(self) -> str:
        return f"<remote {self._cls.__name__} instance on endpoint {self._cls.endpoint.name!r}>"


def _start(
    endpoint: EndpointDef, first: Any, again: Any, lacks: set[str], stream: bool, owner: _Remote
) -> Any:
    """The call ``first()`` makes (``again()`` when sent again): a coroutine, or a Stream."""
    run = functools.partial(dispatch.run, endpoint, lacks=lacks)
    if stream:
        return streams.Stream(endpoint.name, first, again, run)
    call, again = streams.watched(endpoint.name, first, again)
    if owner._retries is None:
        return run(call, again)
    return retried(owner._retries, run, call, again)


def _dump_args(
    owner: _Remote, args: tuple[Any, ...], kwargs: dict[str, Any], fn: Any = None
) -> protocol.Packed:
    return values.dump_arguments(
        owner.__wrapped__ if fn is None else fn,
        owner._label(),
        owner.endpoint.name,
        args,
        kwargs,
        owner._lacks,
    )


def _reject_unknown(func: str, unknown: dict[str, Any], known: Iterable[str]) -> None:
    if not unknown:
        return
    names = sorted(unknown)
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    noun = "argument" if len(names) == 1 else "arguments"
    raise TypeError(f"{func}() got unexpected keyword {noun}: {', '.join(parts)}")


copyreg.pickle(RemoteClass, _Remote.__reduce__)  # a class, still by reference


flash_apps.use_remote(remote)  # FlashApp.remote decorates with this module's remote
