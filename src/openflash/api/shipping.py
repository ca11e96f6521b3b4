"""How decorated code travels to workers: by value, without openflash's own marks.

cloudpickle pickles a function of an importable module by reference, and a worker cannot import
the user's modules (DESIGN.md, "Worker"): the user's own modules are registered to travel by
value, installed ones (the standard library, site-packages) by reference as usual.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import sysconfig
import types
from pathlib import Path
from typing import Any

import cloudpickle

__all__ = ["register_by_value", "shippable", "source_dir"]


#: Attributes openflash puts on user functions (route handlers); they stay out of pickles.
_MARKERS = frozenset({"__remote_config__", "__is_lb_route_handler__", "__flash_local__"})


def shippable(obj: Any) -> Any:
    """``obj`` as it should travel: a function without openflash's marker attributes."""
    if not isinstance(obj, types.FunctionType) or not (_MARKERS & obj.__dict__.keys()):
        return obj
    clone = types.FunctionType(
        obj.__code__, obj.__globals__, obj.__name__, obj.__defaults__, obj.__closure__
    )
    clone.__kwdefaults__ = obj.__kwdefaults__
    clone.__qualname__ = obj.__qualname__
    clone.__module__ = obj.__module__
    clone.__doc__ = obj.__doc__
    clone.__annotations__ = obj.__annotations__
    clone.__dict__.update({k: v for k, v in obj.__dict__.items() if k not in _MARKERS})
    return clone


def source_dir(obj: Any) -> Path | None:
    """The folder of the file that defines ``obj``, or None (built-ins, the REPL)."""
    try:
        return Path(inspect.getfile(obj)).resolve().parent
    except (TypeError, OSError):
        return None


_INSTALLED_PREFIXES = tuple(
    {
        str(Path(p).resolve()) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    }
)


def register_by_value(obj: Any) -> None:
    """Send the object's module by value when it is the user's own code, not an installed one.

    cloudpickle pickles functions of importable modules by reference, and a worker cannot import
    the user's modules; ``__main__`` is already sent by value.
    """
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or not isinstance(module, types.ModuleType):
        return
    path = getattr(module, "__file__", None)
    if not path:
        return
    resolved = str(Path(path).resolve())
    if resolved.startswith(_INSTALLED_PREFIXES):
        return
    with contextlib.suppress(ValueError):  # already registered, or not importable by name
        cloudpickle.register_pickle_by_value(module)
