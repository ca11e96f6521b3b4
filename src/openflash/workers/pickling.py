"""Pickles for the other side: values whose class it cannot import go in portable form.

``dumps(value, lacks)`` pickles with cloudpickle; an object whose class (or a base) comes from a
top-level module for which ``lacks(module)`` is true is replaced by its portable form
(portable.py's table), recursively. This module is part of the worker runtime: it imports the
standard library and cloudpickle only.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle

from openflash.workers import portable, protocol

__all__ = [
    "ArgumentsNotLoadable",
    "NotPortableError",
    "accept_caller",
    "caller_payload",
    "dumps",
    "load_arguments",
    "pack",
    "plain_pickle",
]

#: Types the standard pickler writes as cloudpickle would: nothing by value, no class the other
#: side could lack (subclasses are not these: ``type(value)`` is compared).
PLAIN_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None)})
#: The most items of a list, tuple or dict of plain values that ``plain_pickle`` looks at.
_PLAIN_ITEMS = 32


class NotPortableError(TypeError):
    """A value of a class the other side cannot import, which no rule converts."""

    def __init__(self, value: Any, module: str) -> None:
        cls = type(value)
        self.type_name = f"{cls.__module__}.{cls.__qualname__}"
        self.module = module
        super().__init__(
            f"a {self.type_name} (module {module!r}, which the other side cannot import) has "
            "no portable form"
        )


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    def __init__(
        self,
        file: io.BytesIO,
        lacks: Callable[[str], bool],
        strict: bool,
        buffers: list[protocol.Buffer] | None = None,
    ) -> None:
        keep = protocol.collector(buffers) if buffers is not None else None
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=keep)
        self.lacks = lacks
        self.strict = strict
        self.verdicts: dict[type, str | None] = {}

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if (reduced := protocol.reduce_buffer(obj)) is not NotImplemented:
            return reduced
        if cls not in self.verdicts:
            self.verdicts[cls] = (
                None if isinstance(obj, type) else portable.foreign_class(cls, self.lacks)
            )
        module = self.verdicts[cls]
        if module is None:
            return super().reducer_override(obj)
        converted = portable.portable_form(obj)
        if converted is portable.NO_RULE:
            if self.strict:
                raise NotPortableError(obj, module)
            return super().reducer_override(obj)
        # Rebuilt by the standard library alone: the other side needs nothing of ours.
        return copy.copy, (converted,)


def dumps(value: Any, lacks: Callable[[str], bool], *, strict: bool = False) -> bytes:
    """``value`` pickled for a side lacking the modules ``lacks`` names.

    Without ``strict`` a foreign value no rule converts is pickled as it is (the other side then
    says which module it lacks); with it, NotPortableError names its type and module.
    """
    buffer = io.BytesIO()
    _Pickler(buffer, lacks, strict).dump(value)
    return buffer.getvalue()


def pack(
    value: Any, lacks: Callable[[str], bool] | None, *, strict: bool = False
) -> protocol.Packed:
    """As ``dumps`` (``lacks`` None: nothing converted), large buffers (arrays, bytes,
    memoryviews) out of band: pickled once, never copied into the pickle."""
    buffer = io.BytesIO()
    buffers: list[protocol.Buffer] = []
    keep = protocol.collector(buffers)
    if lacks is None:
        _Plain(buffer, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=keep).dump(value)
    else:
        _Pickler(buffer, lacks, strict, buffers).dump(value)
    return protocol.Packed(buffer.getbuffer(), tuple(buffers))


def plain_pickle(value: Any) -> bytes | None:
    """``value`` pickled by the standard pickler (protocol 5), where it is a plain value or a
    small list, tuple or dict of plain values (``PLAIN_TYPES``): the same bytes ``pack`` would
    write, without building a cloudpickle pickler (most of a small result's cost). None for
    anything else."""
    kind = type(value)
    if kind in PLAIN_TYPES:
        return pickle.dumps(value, protocol=5)
    if kind is list or kind is tuple:
        if len(value) > _PLAIN_ITEMS or any(type(item) not in PLAIN_TYPES for item in value):
            return None
    elif kind is dict:
        if len(value) > _PLAIN_ITEMS or any(
            type(k) not in PLAIN_TYPES or type(v) not in PLAIN_TYPES for k, v in value.items()
        ):
            return None
    else:
        return None
    return pickle.dumps(value, protocol=5)


class _Plain(cloudpickle.Pickler):  # type: ignore[misc]
    def reducer_override(self, obj: Any) -> Any:
        reduced = protocol.reduce_buffer(obj)
        return super().reducer_override(obj) if reduced is NotImplemented else reduced


class ArgumentsNotLoadable(Exception):
    """A call's arguments need a module this environment lacks (``missing``)."""

    def __init__(self, missing: str) -> None:
        super().__init__(missing)
        self.missing = missing


def load_arguments(blob: bytes | protocol.Packed) -> Any:
    """A call's or a constructor's ``(args, kwargs)``; ArgumentsNotLoadable where they need a
    module this environment lacks (the caller can send them again in portable form)."""
    try:
        if type(blob) is bytes:  # a plain pickle (a Packed has its buffers apart)
            return pickle.loads(blob)
        return protocol.packed(blob).load()
    except ModuleNotFoundError as e:
        raise ArgumentsNotLoadable(e.name or "") from e


def caller_payload(modules: frozenset[str]) -> bytes:
    """A CALLER frame's payload: the modules this caller can import, and the rules registered
    with ``register_portable`` so far (so that workers convert with them too)."""
    try:
        rules = cloudpickle.dumps(portable.registered_rules())
    except Exception:  # a rule that does not pickle stays the caller's own
        rules = b""
    return pickle.dumps((sorted(modules), rules), protocol=pickle.HIGHEST_PROTOCOL)


def accept_caller(payload: bytes) -> frozenset[str]:
    """What a CALLER frame says: the caller's modules; its rules are registered here."""
    modules, rules = pickle.loads(payload)
    if rules:
        try:
            for cls, rule in cloudpickle.loads(rules).items():
                portable.register_portable(cls, rule)
        except Exception:  # a rule's class is not importable here: it has nothing to convert
            pass
    return frozenset(modules)
