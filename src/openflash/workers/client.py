"""The light client: ``from runpod_flash import Endpoint, remote`` inside a worker.

A worker imports the modules of its project (``from cpu_worker import preprocess``), and those
modules decorate functions with ``remote`` or ``Endpoint`` at their top. Inside a worker, neither
openflash nor its dependencies are installed, and nothing is added to the user's environment:
the worker runtime's ``openflash`` and ``runpod_flash`` packages resolve the public names lazily,
decorators and configs to this module, the hardware enums and errors to copies of openflash's own
modules.

Decorating here validates nothing and builds nothing: a decorated object is a handle naming the
file and qualified name it was defined at. Calling it sends that name and the pickled arguments
back to the parent (runtime/nested_calls.py), which runs the call with its own definition of the
object (the same file, validated when the parent imported it) on the target endpoint's workers.
Handles the parent pickles (a decorated function used by another one) arrive here as the same
kind of handle.

This module is part of the worker runtime: it imports the standard library, cloudpickle and
openflash.errors only.
"""

from __future__ import annotations

import functools
import inspect
import os
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import cloudpickle

from openflash.errors import FlashError, RemoteError
from openflash.workers import flash_apps, protocol
from openflash.workers.channel import current_call, get_channel
from openflash.workers.fanning import LIGHT_WINDOW, FanOut, Method
from openflash.workers.serverless_client import ClientMode, EndpointAddress

#: The public names of openflash listed here are resolved to this module inside a worker (the
#: runtime's ``openflash`` package, envs/bundle.py); the enums and errors come from their modules.
__all__ = [
    "DEFAULT_WORKERS_MAX",
    "DEFAULT_WORKERS_MIN",
    "CpuLiveLoadBalancer",
    "CpuLiveServerless",
    "CpuLoadBalancerSlsResource",
    "CpuServerlessEndpoint",
    "Endpoint",
    "LiveLoadBalancer",
    "LiveServerless",
    "LoadBalancerSlsResource",
    "NetworkVolume",
    "PodTemplate",
    "RemoteClass",
    "RemoteFunction",
    "RemoteInstance",
    "Retries",
    "ServerlessEndpoint",
    "configure",
    "instance_reference",
    "on_progress",
    "reference",
    "remote",
    "requirements",
]

#: Variables a Ray worker gets: its project's copy on the node, and the driver's folder it is
#: a copy of (backends/ray_worker.py); files under the copy are named by their driver paths.
PROJECT_COPY = "OPENFLASH_PROJECT_COPY"
PROJECT_ORIGIN = "OPENFLASH_PROJECT_ORIGIN"

DEFAULT_WORKERS_MIN = 0
DEFAULT_WORKERS_MAX = 1


class _Config:
    """A resource config as written in the project; the parent's copy is the validated one."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({fields})"


class LiveServerless(_Config):
    pass


class ServerlessEndpoint(_Config):
    pass


class CpuLiveServerless(_Config):
    pass


class CpuServerlessEndpoint(_Config):
    pass


class LiveLoadBalancer(_Config):
    pass


class CpuLiveLoadBalancer(_Config):
    pass


class LoadBalancerSlsResource(_Config):
    pass


class CpuLoadBalancerSlsResource(_Config):
    pass


class NetworkVolume(_Config):
    pass


class PodTemplate(_Config):
    pass


class Retries(_Config):
    """Retries inside a worker: the parent's copy of the endpoint applies them."""

    def __init__(self, max_retries: int = 0, **fields: Any) -> None:
        super().__init__(max_retries=max_retries, **fields)


def configure(*, backend: str | None = None, address: str | None = None) -> None:
    """Inside a worker, the parent decides where nested calls run: nothing to configure."""


def on_progress(callback: object = None) -> Any:
    """Inside a worker, nested calls' progress is not relayed: say so (openflash.on_progress)."""
    raise FlashError(
        "openflash.on_progress watches calls made from the caller's process; inside a worker, "
        "the progress of nested calls is not relayed",
        hint="report this call's own progress with openflash.progress(value)",
    )


class _Handle:
    """A decorated object of the project, named by its file and qualified name."""

    def __init__(self, file: str, qualname: str, label: str) -> None:
        self._file = file
        self._qualname = qualname
        self._label = label

    def __reduce__(self) -> Any:
        return (reference, (self._file, self._qualname, self._label, type(self).__name__))

    def __repr__(self) -> str:
        return f"<remote {self._qualname} (called through the parent)>"


class RemoteFunction(_Handle, FanOut):
    """Calling it returns an awaitable of the result, computed on the target's workers; it fans
    out (``map``, ``spawn``, workers/fanning.py)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args_blob = _dump(args, kwargs)
        request = protocol.NestedRequest(
            self._file, self._qualname, current_call.get(), protocol.OP_FUNCTION, args_blob
        )
        return _call(request, self._label)


class RemoteClass(_Handle):
    """Instantiating it returns a handle whose methods run on one worker of the target."""

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteInstance:
        return RemoteInstance(self, _dump(args, kwargs))


class RemoteInstance:
    """An instance of a decorated class, created on a worker of its endpoint at the first call."""

    def __init__(
        self, cls: RemoteClass, init_args: bytes | protocol.Packed, instance_id: str = ""
    ) -> None:
        self._cls = cls
        self._init_args = init_args
        self._id = instance_id or uuid.uuid4().hex
        if not instance_id:  # made here: dropped when no longer used here
            weakref.finalize(self, _release, cls._file, cls._qualname, self._id)

    def __reduce__(self) -> Any:
        cls = self._cls
        return (instance_reference, (cls._file, cls._qualname, self._init_args, self._id))

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(name)
        cls = self._cls

        def method(*args: Any, **kwargs: Any) -> Any:
            request = protocol.NestedRequest(
                cls._file,
                cls._qualname,
                current_call.get(),
                protocol.OP_METHOD,
                _dump(args, kwargs),
                instance=self._id,
                method=name,
                init_args=self._init_args,
            )
            return _call(request, f"{cls._qualname}.{name}()")

        return Method(method, name, f"{cls._qualname}.{name}()", LIGHT_WINDOW)


def reference(file: str, qualname: str, label: str, kind: str = "RemoteFunction") -> _Handle:
    """A handle from a pickle (the parent's handles pickle to this)."""
    cls = RemoteClass if kind == "RemoteClass" else RemoteFunction
    return cls(file, qualname, label)


def instance_reference(
    file: str, qualname: str, init_args: bytes | protocol.Packed, instance_id: str
) -> RemoteInstance:
    """An instance from a pickle: the one its maker holds (the maker drops it, not this copy)."""
    return RemoteInstance(RemoteClass(file, qualname, qualname), init_args, instance_id)


def _decorate(obj: Any) -> Any:
    try:
        file = _as_origin(os.path.realpath(inspect.getsourcefile(obj) or inspect.getfile(obj)))
    except (TypeError, OSError):
        file = ""
    handle: RemoteClass | RemoteFunction
    if inspect.isclass(obj):
        handle = RemoteClass(file, obj.__qualname__, obj.__qualname__)
    else:
        handle = RemoteFunction(file, obj.__qualname__, f"{obj.__qualname__}()")
    functools.update_wrapper(handle, obj, updated=())
    return handle


def _as_origin(file: str) -> str:
    """``file`` as the process owning the pools names it: a file of a shipped project copy by
    its path in the original folder."""
    copy, origin = os.environ.get(PROJECT_COPY), os.environ.get(PROJECT_ORIGIN)
    if copy and origin:
        copy = os.path.realpath(copy)
        if file.startswith(copy + os.sep):
            return os.path.join(origin, file[len(copy) + 1 :])
    return file


def requirements(path: object) -> list[str]:
    """Inside a worker, dependencies are already installed: nothing to read."""
    return []


def remote(
    resource_config: Any = None,
    dependencies: Any = None,
    system_dependencies: Any = None,
    accelerate_downloads: bool = True,
    local: bool = False,
    **options: Any,
) -> Callable[[Any], Any]:
    """The decorator, inside a worker: a handle that calls through the parent."""
    return (lambda obj: obj) if local else _decorate


class Endpoint(ClientMode):
    """``Endpoint`` inside a worker: a decorator, or a holder of routes, whose handles call
    through the parent; with ``id=`` or ``url=``, a client of an endpoint served elsewhere
    (serverless_client.py), as in the parent."""

    def __init__(self, name: str | None = None, **config: Any) -> None:
        self.name = name
        self.config = config
        self.routes: list[tuple[str, str, Any]] = []
        given = {k: config[k] for k in ("id", "url") if config.get(k) is not None}
        self.address = EndpointAddress.of(**given) if given else None

    def __call__(self, obj: Any) -> Any:
        return _decorate(obj)

    async def _address(self) -> EndpointAddress:
        if self.address is None:
            raise FlashError(
                f"Endpoint(name={self.name!r}) is not a client inside a worker (an image's "
                "server is started by the process that owns the pools)",
                hint="call it by id: Endpoint(id=...) reaches the flash run that serves it",
            )
        return self.address

    def _verb(self, method: str, path: str, data: Any, kwargs: dict[str, Any]) -> Any:
        if self.address is not None or data is not None:
            return self._client_call(method, path, data, kwargs)

        def register(fn: Any) -> Any:
            handle = fn if kwargs.get("local") else _decorate(fn)
            self.routes.append((method, path, handle))
            return handle

        return register

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


def _dump(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    try:
        blob: bytes = cloudpickle.dumps((args, kwargs))
        return blob
    except Exception as e:
        raise FlashError(
            f"the arguments of a nested call cannot be pickled: {e}",
            hint="pass picklable values (numbers, strings, lists, dicts, dataclasses, arrays)",
        ) from e


async def _call(request: protocol.NestedRequest, label: str) -> Any:
    channel = get_channel()
    if channel is None:
        raise FlashError(
            f"{label} was called inside a worker that cannot reach the process that owns the "
            "pools (a process the function started, not the worker itself)",
            hint="make nested calls from the function's own thread or task (not from a process "
            "it started), or call both functions from the caller",
        )
    reply = await channel.request(request)
    if reply.ok:
        try:
            return protocol.loads(reply.payload)
        except Exception as e:
            raise FlashError(
                f"the result of {label} could not be unpickled in this worker: "
                f"{type(e).__name__}: {e}",
                hint="return plain Python values, or add the packages the result needs to this "
                "endpoint's dependencies too",
            ) from None
    raise _error(reply, label)


def _error(reply: protocol.NestedReply, label: str) -> BaseException:
    if reply.error == "remote":
        info = protocol.loads(reply.payload)
        original = protocol.load_exception(info.get("exception"))
        return RemoteError.wrap(original, info["message"], **info["fields"])
    error = protocol.load_exception(reply.payload)
    if error is None:
        return FlashError(
            f"{label} failed in the process that owns the pools, and its error does not "
            "unpickle in this worker",
            hint="the error is in that process's output (its terminal or flash run's log)",
        )
    return error


def _release(file: str, qualname: str, instance_id: str) -> None:
    channel = get_channel()
    if channel is not None:
        channel.release(file, qualname, instance_id)


flash_apps.use_remote(remote)  # inside a worker, FlashApp.remote is this module's
