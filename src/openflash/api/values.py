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
from typing import Any

import cloudpickle

from openflash.errors import FlashError
from openflash.workers import pickling, protocol

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
    """``obj`` pickled once (protocol 5), its large buffers (arrays, bytes) out of band."""
    buffers: list[protocol.Buffer] = []
    file = io.BytesIO()
    _Pickler(file, protocol=5, buffer_callback=protocol.collector(buffers)).dump(obj)
    return protocol.Packed(file.getbuffer(), tuple(buffers))


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
