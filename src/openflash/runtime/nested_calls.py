"""Nested calls, on the side that owns the pools: a worker's call to another decorated object.

Every decorated function and class registers here by the file it is defined in and its
qualified name: that pair is what a worker sends (its light client names what it decorated the
same way, and the handles this process pickles travel as that pair). A nested call runs with
this process's definition (validated, with its endpoint's dependencies) on the target
endpoint's pool, like a call made here; the pool checks that it can ever run (waits.py).

A name not registered yet is a module of the project this process has not imported (a worker
imported it inside a function): it is imported here, by its module name under the project's
folder, and only from the folders of the project's registered endpoints.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from openflash.errors import FlashError
from openflash.runtime.failures import remote_error
from openflash.workers import events, protocol
from openflash.workers.calls import Call

if TYPE_CHECKING:
    from openflash.runtime.core import Runtime
    from openflash.runtime.definitions import EndpointDef

__all__ = [
    "Handle",
    "NestedCalls",
    "lookup",
    "project_digest",
    "project_fingerprint",
    "project_root",
    "register",
    "source_file",
]

#: Folders of a project whose files a worker never imports as the project's own.
_NOT_PROJECT = frozenset({"__pycache__", "node_modules", "site-packages"})
#: Past this many files, a project is not fingerprinted (its pools do not restart on edits).
_DIGEST_LIMIT = 5000

logger = logging.getLogger("openflash")


class Handle(Protocol):
    """What remote.py's handles offer (RemoteFunction and RemoteClass)."""

    endpoint: EndpointDef
    __name__: str

    def _payload(self) -> tuple[str, bytes]: ...

    def _label(self) -> str: ...

    _source: str | None


_handles: dict[tuple[str, str], Handle] = {}


def register(file: str, qualname: str, handle: Handle) -> None:
    _handles[(file, qualname)] = handle


def project_root(folder: Path) -> Path:
    """The folder a module in ``folder`` imports from: above its packages (``__init__.py``)."""
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        folder = folder.parent
    return folder


def project_digest(root: Path, modules: Iterable[str]) -> str:
    """A fingerprint of the project's Python files (names, sizes, times) when ``modules`` (what
    a function imports) include one of the project's own; else "".

    A worker keeps what it has imported: its pool is keyed by this, so that a changed project
    file gives the function's endpoint fresh workers (a reload under ``flash run``).
    """
    tops = {m.split(".")[0] for m in modules}
    if not any((root / f"{m}.py").is_file() or (root / m / "__init__.py").is_file() for m in tops):
        return ""
    return project_fingerprint(root)


def project_fingerprint(root: Path) -> str:
    """A fingerprint of the Python files under ``root`` (names, sizes, modification times);
    "" past ``_DIGEST_LIMIT`` files."""
    digest = hashlib.sha256()
    count = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in _NOT_PROJECT
            and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
        )
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            count += 1
            if count > _DIGEST_LIMIT:
                return ""
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def lookup(file: str, qualname: str) -> Handle:
    """The decorated object defined at ``qualname`` in ``file``, importing its module if needed."""
    handle = _handles.get((file, qualname))
    if handle is not None:
        return handle
    path = Path(file)
    roots = {h.endpoint.project for h in list(_handles.values()) if h.endpoint.project}
    root = project_root(path.parent)
    if path.suffix != ".py" or root not in roots:
        raise FlashError(
            f"a worker called {qualname}() of {file}, which is not a decorated function of "
            "this project",
            hint="call functions decorated with @remote or @Endpoint in the project's own files",
        )
    parts = path.relative_to(root).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    if str(root) not in sys.path:
        sys.path.append(str(root))
    try:
        importlib.import_module(name)
    except BaseException as e:
        raise FlashError(
            f"a worker called {qualname}() of {file}, and importing its module {name!r} here "
            f"failed: {type(e).__name__}: {e}",
            hint="the module must import in the process that runs the project, as it does "
            "in the worker",
        ) from None
    handle = _handles.get((file, qualname))
    if handle is None:
        raise FlashError(
            f"a worker called {qualname}() of {file}, and the module {name!r} has no decorated "
            f"function or class {qualname!r}",
            hint="decorate it with @remote or @Endpoint at its module's top level",
        )
    return handle


class NestedCalls:
    """The pools' NestedHandler: runs a worker's nested calls on the runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def call(
        self, outer: Call | None, request: protocol.NestedRequest
    ) -> protocol.NestedReply:
        try:
            handle = lookup(request.file, request.qualname)
            call = _call(handle, request)
        except FlashError as e:
            return _flash_reply(e)
        call.parent = outer
        call.caller_modules = request.caller  # the result is for the calling worker
        if outer is not None:
            outer.children.add(call)
        # This runs in the context of the worker's reader task, which holds the hooks of the
        # call whose submit started that worker (a /run job's: server/jobs.py). They are not
        # this call's: a nested call a reload hands back must not make that job run again, nor
        # may its start mark that job started.
        taken = events.call_taken.set(None)
        handed_back = events.call_handed_back.set(None)
        try:
            reply = await self.runtime._submit(handle.endpoint, call)
        except FlashError as e:
            return _flash_reply(e)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # not ours to crash on: the caller gets it
            return _flash_reply(
                FlashError(
                    f"{call.label} failed before it reached a worker: {type(e).__name__}: {e}",
                    hint="this is a bug in openflash: please report it with this message",
                )
            )
        finally:
            events.call_handed_back.reset(handed_back)
            events.call_taken.reset(taken)
            if outer is not None:
                outer.children.discard(call)
        if reply.ok:  # a large payload is a mapping (payloads.read_into, shared_memory): as bytes
            return protocol.NestedReply(True, bytes(reply.payload))
        info = protocol.decode_error(reply.payload)
        error = remote_error(handle.endpoint, call, info)
        fields: dict[str, Any] = {
            "exc_type": error.exc_type,
            "remote_traceback": error.remote_traceback,
            "missing_module": error.missing_module,
            "hint": error.hint,
        }
        payload = {"message": error.message, "fields": fields, "exception": info.get("exception")}
        return protocol.NestedReply(False, protocol.dumps(payload), "remote")

    def release(self, file: str, qualname: str, instance_id: str) -> None:
        handle = _handles.get((file, qualname))
        if handle is not None:
            self.runtime.release_instance(handle.endpoint, instance_id)


def _call(handle: Handle, request: protocol.NestedRequest) -> Call:
    is_class = inspect.isclass(getattr(handle, "__wrapped__", None))
    if is_class != (request.op == protocol.OP_METHOD) or (is_class and request.init_args is None):
        raise FlashError(
            f"a worker called {request.qualname} as a {'class' if not is_class else 'function'}"
            f", and it is a decorated {'class' if is_class else 'function'} here",
            hint="the worker and this process must import the same source of the project",
        )
    wrapped = getattr(handle, "__wrapped__", None)
    fn = getattr(wrapped, request.method, None) if is_class else wrapped
    if (
        inspect.isgeneratorfunction(fn)
        or inspect.isasyncgenfunction(fn)
        or (getattr(handle, "_streams", False))
    ):
        raise FlashError(
            f"{request.qualname}{'.' + request.method if is_class else ''}() is a generator "
            "function, and a worker's nested call cannot stream its items",
            hint="call it from the caller (`async for item in ...`), or give the nested call a "
            "function that returns a list",
        )
    target, blob = handle._payload()
    if request.op == protocol.OP_METHOD:
        return Call(
            protocol.OP_METHOD,
            request.instance,
            blob,
            request.args,
            label=f"{handle.__name__}.{request.method}()",
            method=request.method,
            init_args=request.init_args,
            source=handle._source,
        )
    label = handle._label()
    return Call(
        protocol.OP_FUNCTION, target, blob, request.args, label=label, source=handle._source
    )


def _flash_reply(error: FlashError) -> protocol.NestedReply:
    try:
        return protocol.NestedReply(False, protocol.dumps(error), "flash")
    except Exception:  # state that does not pickle: the text still goes
        plain = FlashError(error.message, hint=error.hint)
        return protocol.NestedReply(False, protocol.dumps(plain), "flash")


def source_file(obj: Any) -> str | None:
    """The resolved file ``obj`` is defined in, as a worker's light client names it."""
    try:
        return os.path.realpath(inspect.getsourcefile(obj) or inspect.getfile(obj))
    except (TypeError, OSError):
        return None
