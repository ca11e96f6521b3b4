"""Portable values: what a value becomes when the side receiving it cannot import its class.

A caller and a worker have different packages. A value whose class (or a base of it) comes from a
top-level module the receiving side lacks is converted, before pickling, by the first rule of
this table that matches it (``register_portable`` puts a rule of the user's first):

=====================================  ===============================================
value (class, by module and name)      portable form
=====================================  ===============================================
registered with ``register_portable``  what its function returns
numpy scalar (``numpy.generic``)       the Python scalar (``.item()``)
numpy array (``numpy.ndarray``)        nested lists (``.tolist()``)
numpy dtype                            its name, e.g. ``"float64"``
pandas ``DataFrame``                   ``{"index": [...], "columns": [...], "data": [[row]...]}``
pandas ``Series``                      ``{"index": [...], "data": [...], "name": name}``
pandas ``Index``                       a list
pandas ``Timestamp`` / ``Timedelta``   ``datetime.datetime`` / ``datetime.timedelta``
torch ``Tensor``                       nested lists (``.detach().cpu().tolist()``)
PIL ``Image``                          PNG bytes
pydantic model                         a dict (``.model_dump()``)
dataclass instance                     a dict of its fields
subclass of str, bytes, int, float,    the builtin base (``torch.__version__`` -> str,
complex, list, tuple, dict, set,       ``torch.Size`` -> tuple)
frozenset
=====================================  ===============================================

Converted values are converted again where they hold foreign values themselves (a dict of numpy
scalars). A value no rule matches travels unchanged, and the receiving side says which module it
lacks. Rules recognise classes by module and name, never by importing their package: this module
runs in workers, and imports the standard library only.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "NO_RULE",
    "foreign_class",
    "importable_modules",
    "portable_form",
    "register_portable",
    "registered_rules",
    "top_module",
]

#: What ``portable_form`` returns for a value that no rule converts.
NO_RULE: Any = object()

_BUILTIN_BASES = (str, bytes, int, float, complex, list, tuple, dict, set, frozenset)

#: Rules the user registered: a class or ``"module.QualName"`` -> its conversion.
_registered: dict[type | str, Callable[[Any], Any]] = {}


def register_portable(cls: type | str, to_portable: Callable[[Any], Any]) -> None:
    """Convert instances of ``cls`` (a class, or ``"module.QualName"`` to name one without
    importing it, where the module may be the package's top level: ``"pandas.Period"``) with
    ``to_portable`` when the receiving side cannot import it.

    ``to_portable`` takes the value and returns plain data (what it returns is converted again
    if it holds foreign values). Instances of subclasses match too. Registered rules come before
    the built-in table (see this module's docstring). Raises TypeError for anything else.
    """
    if not (isinstance(cls, (type, str))) or not callable(to_portable):
        raise TypeError(
            f"register_portable(cls, to_portable) takes a class (or 'module.QualName') and a "
            f"function, got {cls!r} and {to_portable!r}"
        )
    _registered[cls] = to_portable


def registered_rules() -> dict[type | str, Callable[[Any], Any]]:
    """The rules registered so far (a copy)."""
    return dict(_registered)


def top_module(cls: type) -> str:
    return (getattr(cls, "__module__", None) or "builtins").partition(".")[0]


def foreign_class(cls: type, lacks: Callable[[str], bool]) -> str | None:
    """The first top-level module of ``cls`` or its bases that the receiving side lacks."""
    for base in cls.__mro__:
        top = top_module(base)
        if top not in ("builtins", "__main__") and lacks(top):
            return top
    return None


def portable_form(value: Any) -> Any:
    """``value`` converted by the first matching rule, or NO_RULE."""
    cls = type(value)
    for base in cls.__mro__:
        rule = (
            _registered.get(base)
            or _registered.get(f"{base.__module__}.{base.__qualname__}")
            or _registered.get(f"{top_module(base)}.{base.__qualname__}")  # "pandas.Period"
        )
        if rule is not None:
            return rule(value)
    names = {(top_module(b), b.__name__) for b in cls.__mro__}
    for (module, name), convert in _NAMED_RULES:
        if (module, name) in names:
            return convert(value)
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    for base in _BUILTIN_BASES:
        if isinstance(value, base):
            return _builtin(base, value)
    return NO_RULE


def _builtin(base: type, value: Any) -> Any:
    if base is str:
        return str.__str__(value)
    if base is dict:
        return dict(value.items())
    return base(value)


def _frame(df: Any) -> dict[str, Any]:
    return {"index": list(df.index), "columns": list(df.columns), "data": df.values.tolist()}


def _series(s: Any) -> dict[str, Any]:
    return {"index": list(s.index), "data": s.tolist(), "name": s.name}


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _model(model: Any) -> Any:
    dump = getattr(model, "model_dump", None) or model.dict
    return dump()


_NAMED_RULES: list[tuple[tuple[str, str], Callable[[Any], Any]]] = [
    (("numpy", "ndarray"), lambda a: a.tolist()),
    (("numpy", "generic"), lambda s: s.item()),
    (("numpy", "dtype"), lambda d: str(d)),
    (("pandas", "DataFrame"), _frame),
    (("pandas", "Series"), _series),
    (("pandas", "Index"), lambda i: i.tolist()),
    (("pandas", "Timestamp"), lambda t: t.to_pydatetime()),
    (("pandas", "Timedelta"), lambda t: t.to_pytimedelta()),
    (("torch", "Tensor"), lambda t: t.detach().cpu().tolist()),
    (("PIL", "Image"), _png),
    (("pydantic", "BaseModel"), _model),
]


def importable_modules() -> frozenset[str]:
    """The top-level modules this interpreter can import, found without importing them:
    built-in and standard-library modules, those already imported, and the modules, packages
    and extension modules in each ``sys.path`` folder."""
    names = set(sys.builtin_module_names) | set(getattr(sys, "stdlib_module_names", ()))
    names.update(name.partition(".")[0] for name in list(sys.modules))
    for folder in sys.path:
        try:
            entries = os.listdir(folder or ".")
        except OSError:
            continue
        for entry in entries:
            stem = entry.partition(".")[0]
            if stem.isidentifier() and not entry.endswith((".dist-info", ".egg-info", ".pth")):
                names.add(stem)
    return frozenset(names)
