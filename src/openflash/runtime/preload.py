"""What a worker template imports before forking: the modules a decorated object's code imports,
and an explicit ``preload=[...]``."""

from __future__ import annotations

import dis
import re
import types
from collections.abc import Iterable
from typing import Any

from openflash.errors import ConfigError
from openflash.workers.child import functions_of

__all__ = ["imported_modules", "normalize_preload"]

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: Never preloaded: openflash itself is not in the worker's environment.
_SKIPPED = frozenset({"__future__", "openflash", "runpod_flash"})


def normalize_preload(values: Iterable[str] | None) -> tuple[str, ...]:
    """Validate ``preload=[...]``: dotted module names."""
    if values is None:
        return ()
    if isinstance(values, str):
        raise ConfigError(
            f"preload must be a list of module names, got the string {values!r}",
            hint=f"wrap it in a list: preload=[{values!r}]",
        )
    names = []
    for index, value in enumerate(values):
        if not isinstance(value, str) or not _MODULE.match(value):
            raise ConfigError(
                f"preload[{index}] {value!r} is not a module name",
                hint="list importable module names, e.g. preload=['torch', 'transformers']",
            )
        names.append(value)
    return tuple(dict.fromkeys(names))


def imported_modules(obj: Any) -> tuple[str, ...]:
    """The top-level modules ``obj``'s code imports, in its body or through module globals it
    uses (``import numpy as np`` at the top of the file, ``np`` in the function; a function or
    class imported from another module)."""
    found: dict[str, None] = {}
    for function in functions_of(obj):
        code = function.__code__
        for sub in _codes(code):
            for instruction in dis.get_instructions(sub):
                if instruction.opname == "IMPORT_NAME" and instruction.argval:
                    found[str(instruction.argval).split(".")[0]] = None
            for name in sub.co_names:
                value = function.__globals__.get(name)
                if isinstance(value, types.ModuleType):
                    found[value.__name__.split(".")[0]] = None
                elif isinstance(value, (types.FunctionType, type)):
                    # `from helpers import tag`: the worker imports helpers to unpickle it.
                    module = getattr(value, "__module__", None) or ""
                    if module not in ("builtins", "__main__", function.__module__):
                        found[module.split(".")[0]] = None
    return tuple(name for name in found if name and name not in _SKIPPED)


def _codes(code: types.CodeType) -> list[types.CodeType]:
    codes = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            codes += _codes(const)
    return codes
