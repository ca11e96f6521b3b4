"""A call's values as they travel: arguments pickled for the worker, results unpickled here.

A worker whose environment lacks a module that an argument's class comes from answers
ARGUMENTS_NOT_LOADABLE naming it (workers/child.py); the handle then learns that its endpoint's
environment lacks it and pickles that call's arguments, and every later call's, again with such
values in portable form (workers/portable.py's table). An argument no rule converts is named in
a FlashError.
"""

from __future__ import annotations

import copyreg
import inspect
import io
import pickle
import threading
import types
from typing import Any

import cloudpickle
import cloudpickle.cloudpickle as _cloudpickle_internals

from openflash.errors import FlashError
from openflash.workers import payloads, pickling, protocol

__all__ = ["dump_arguments", "dumps", "load_result", "missing_module"]


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, except that a class whose metaclass has a copyreg reducer (a decorated
    class) is reduced by it: by reference to its endpoint, never by value (cloudpickle handles
    classes before looking at copyreg)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type):
            reduce = copyreg.dispatch_table.get(type(obj))
            if reduce is not None:
                return reduce(obj)
        elif (reduced := protocol.reduce_buffer(obj)) is not NotImplemented:
            return reduced
        return super().reducer_override(obj)


def dumps(obj: Any) -> bytes:
    """``obj`` pickled as cloudpickle does, decorated classes by reference."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.DEFAULT_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _pack(obj: Any) -> protocol.Packed:
    """``obj`` pickled once (protocol 5), its large buffers (arrays, bytes) out of band.

    The C pickler where it gives what cloudpickle would (about 1-3 us a call instead of 6):
    plain values at once, anything else through ``_Fast``, which hands a function or class that
    cloudpickle sends by value (a lambda, a closure, ``__main__``'s, a module registered by value)
    and cloudpickle's own types back to cloudpickle. A failure of the C pickler, whatever it is,
    is retried with cloudpickle, whose error (if any) is the one raised.
    """
    args, kwargs = obj
    if _by_reference is not None:
        if _plain(args) and (not kwargs or _plain(kwargs.values())):
            return protocol.Packed(pickle.dumps(obj, protocol=5))
        try:
            return _fast_pack(obj)
        except Exception:  # _ByValue, or anything the C pickler refused: cloudpickle decides
            pass
    buffers: list[protocol.Buffer] = []
    file = io.BytesIO()
    _Pickler(file, protocol=5, buffer_callback=protocol.collector(buffers)).dump(obj)
    return protocol.Packed(file.getbuffer(), tuple(buffers))


#: Values the C pickler writes as cloudpickle does, with no out-of-band buffer (bytes are copied
#: into the pickle by both).
_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes})

#: cloudpickle's own reducers (classmethod, module, method, TypeVar, ...); memoryview is ours.
_CLOUDPICKLE_TYPES = frozenset(getattr(_cloudpickle_internals, "_dispatch_table", {})) - {
    memoryview
}

#: Whether cloudpickle sends a function or class by reference (None: this cloudpickle lacks it,
#: and every call is pickled by cloudpickle).
_by_reference = getattr(_cloudpickle_internals, "_should_pickle_by_reference", None)


def _plain(items: Any) -> bool:
    return _ATOMS.issuperset(map(type, items))


class _ByValue(Exception):
    """What cloudpickle pickles its own way is in the value: cloudpickle pickles it."""


class _Fast(pickle.Pickler):
    """The C pickler, for values whose every function and class cloudpickle would also send by
    reference; a decorated class by its copyreg reducer, a memoryview out of band."""

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is memoryview:
            return protocol.reduce_buffer(obj)
        if kind in _CLOUDPICKLE_TYPES:
            raise _ByValue
        if issubclass(kind, type):
            reduce = copyreg.dispatch_table.get(kind)
            if reduce is not None:
                return reduce(obj)
        elif kind is not types.FunctionType:
            return NotImplemented
        if _by_reference is None or not _by_reference(obj):
            raise _ByValue
        return NotImplemented


class _FastPicklers(threading.local):
    """One ``_Fast`` pickler per thread, reused: making one costs more than pickling a call's
    arguments. A pickling that starts while another runs in the same thread (a ``__reduce__``
    that calls an endpoint) gets a fresh one."""

    def __init__(self) -> None:
        self.busy = False
        self.renew()

    def renew(self) -> None:
        self.file = io.BytesIO()
        self.buffers: list[protocol.Buffer] = []
        self.pickler = _Fast(
            self.file, protocol=5, buffer_callback=protocol.collector(self.buffers)
        )


_fast_picklers = _FastPicklers()


def _fast_pack(obj: Any) -> protocol.Packed:
    own = _fast_picklers
    if own.busy:
        buffers: list[protocol.Buffer] = []
        file = io.BytesIO()
        _Fast(file, protocol=5, buffer_callback=protocol.collector(buffers)).dump(obj)
        return protocol.Packed(file.getbuffer(), tuple(buffers))
    own.busy = True
    try:
        own.pickler.dump(obj)
        parts = tuple(own.buffers)
        if own.file.tell() < payloads.SEPARATE:
            return protocol.Packed(own.file.getvalue(), parts)
        data = own.file.getbuffer()  # a large pickle is not copied: the pickler starts afresh
        own.renew()
        return protocol.Packed(data, parts)
    finally:
        own.pickler.clear_memo()
        own.file.seek(0)
        own.file.truncate()
        own.buffers.clear()
        own.busy = False


def dump_arguments(
    fn: Any,
    label: str,
    endpoint: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    lacks: set[str],
) -> protocol.Packed:
    """``(args, kwargs)`` pickled for a worker of ``endpoint`` lacking the modules ``lacks``
    (their large buffers out of band: they are sent from the caller's own memory).

    Raises FlashError naming the argument that cannot be pickled, or that comes from a module in
    ``lacks`` and has no portable form.
    """
    try:
        if not lacks:
            return _pack((args, kwargs))
        known = frozenset(lacks)
        return pickling.pack((args, kwargs), known.__contains__, strict=True)
    except pickling.NotPortableError as e:
        name = _culprit(fn, args, kwargs, known)
        raise FlashError(
            f"argument {name} of {label} is a {e.type_name}, from module {e.module!r}, which "
            f"endpoint {endpoint!r}'s environment lacks, and it has no portable form",
            hint=f"add {e.module!r} to the endpoint's dependencies, pass plain data (dicts, "
            "lists, numbers), or register a conversion with openflash.register_portable",
        ) from None
    except Exception as e:
        raise FlashError(
            f"the arguments of {label} cannot be sent to its worker: {e}",
            hint="pass picklable values (numbers, strings, lists, dicts, dataclasses, arrays)",
        ) from e


def missing_module(info: protocol.ErrorInfo) -> str | None:
    """The top-level module a worker said it lacks to load a call's arguments, if it said so."""
    if info["type"] != protocol.ARGUMENTS_NOT_LOADABLE or not info["missing_module"]:
        return None
    return info["missing_module"].partition(".")[0]


def _culprit(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], lacks: frozenset[str]) -> str:
    try:
        bound = dict(inspect.signature(fn).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        bound = {**{f"#{i + 1}": a for i, a in enumerate(args)}, **kwargs}
    for name, value in bound.items():
        try:
            pickling.dumps(value, lacks.__contains__, strict=True)
        except pickling.NotPortableError:
            return repr(name) if not name.startswith("#") else name
        except Exception:
            continue
    return "(one of them)"


def load_result(endpoint: str, label: str, payload: protocol.Buffer) -> Any:
    """A worker's pickled result, unpickled here; FlashError where a class it needs is not
    importable here (a worker sends portable forms for those it knows: portable.py)."""
    try:
        return protocol.loads(payload)
    except Exception as e:
        raise FlashError(
            f"the result of {label} on endpoint {endpoint!r} could not be unpickled "
            f"here: {type(e).__name__}: {e}",
            hint="return plain Python values (dict, list, str, numbers), register a conversion "
            "with openflash.register_portable, or install the packages the result needs in the "
            "calling environment too",
        ) from None
