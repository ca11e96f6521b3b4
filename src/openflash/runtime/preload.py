"""What a worker template imports before forking: the modules a decorated object's code imports,
an explicit ``preload=[...]``, and what its workers were seen importing (learned preload: the
record is kept by envs/preload_records.py, fed by the pool from its workers' IMPORTED frames,
read by the template when it starts)."""

from __future__ import annotations

import dis
import logging
import re
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from openflash.envs.preload_records import PreloadRecord
from openflash.errors import ConfigError
from openflash.runtime.nested_calls import project_fingerprint
from openflash.workers.child import functions_of

__all__ = ["imported_modules", "learned_record", "normalize_preload", "recorder"]

logger = logging.getLogger("openflash")

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
    """The modules ``obj``'s code imports, by their dotted names (``scipy.stats``, not only
    ``scipy``: a template that imported only ``scipy`` leaves its forked workers the rest to
    import), in its body or through module globals it uses (``import numpy as np`` at the top of
    the file, ``np`` in the function; a function or class imported from another module)."""
    found: dict[str, None] = {}
    for function in functions_of(obj):
        code = function.__code__
        for sub in _codes(code):
            for instruction in dis.get_instructions(sub):
                if instruction.opname == "IMPORT_NAME" and instruction.argval:
                    found[str(instruction.argval)] = None
            for name in sub.co_names:
                value = function.__globals__.get(name)
                if isinstance(value, types.ModuleType):
                    found[value.__name__] = None
                elif isinstance(value, (types.FunctionType, type)):
                    # `from helpers import tag`: the worker imports helpers to unpickle it.
                    module = getattr(value, "__module__", None) or ""
                    if module not in ("builtins", "__main__", function.__module__):
                        found[module] = None
    return tuple(name for name in found if name and name.split(".")[0] not in _SKIPPED)


def _codes(code: types.CodeType) -> list[types.CodeType]:
    codes = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            codes += _codes(const)
    return codes


def learned_record(endpoint: str, environment: Path, project: Path | None) -> PreloadRecord:
    """Where ``endpoint``'s learned modules are kept in ``environment`` (its store folder), for
    the current version of its ``project``'s files."""
    return PreloadRecord(environment, endpoint, project_fingerprint(project) if project else "")


def recorder(record: PreloadRecord) -> Callable[[str, list[str]], None]:
    """What a pool calls with what a worker imported: added to ``record`` (errors logged)."""

    def add(function: str, modules: list[str]) -> None:
        try:
            record.add(function, modules)
        except OSError as e:  # a full disk or a removed environment: nothing is lost but speed
            logger.debug("openflash: cannot record the imports of %s: %s", function, e)

    return add
