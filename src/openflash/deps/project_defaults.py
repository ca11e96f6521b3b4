"""A project's default install options: ``[tool.openflash]`` in its pyproject.toml.

The nearest pyproject.toml at or above the decorated file's folder that has a
``[tool.openflash]`` table gives the defaults of every endpoint of the project; an endpoint's own
options (``remote(index_url=...)``) win where both are set. The keys are those of
``remote(...)``, spelt with ``-`` or ``_``::

    [tool.openflash]
    index-url = "https://pkgs.example.com/simple"
    extra-index-urls = ["https://mirror.example.com/simple"]
    find-links = ["wheels"]                     # relative to the pyproject.toml
    torch-backend = "cpu"
    extra-build-dependencies = { flash-attn = ["torch"] }
    no-build-isolation = ["flash-attn"]
    prerelease = "allow"

Files are read once per (path, modification time).
"""

from __future__ import annotations

import difflib
import functools
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from openflash.envs.uv_options import OPTION_NAMES, UvOptions, uv_options
from openflash.errors import ConfigError

__all__ = ["project_options"]


def project_options(start: Path | None) -> UvOptions:
    """The ``[tool.openflash]`` defaults of the project ``start`` is in (none: no options).
    Raises ConfigError naming the file and the key when a value is not valid."""
    if start is None:
        return UvOptions()
    for folder in [start, *start.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                stamp = candidate.stat().st_mtime_ns
            except OSError:
                continue
            found = _read(candidate, stamp)
            if found is not None:
                return found
    return UvOptions()


@functools.lru_cache(maxsize=64)
def _read(path: Path, stamp: int) -> UvOptions | None:
    """The options of ``path``'s ``[tool.openflash]``, or None when it has no such table."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None  # not ours to report: other tools read this file too
    table = data.get("tool", {}).get("openflash")
    if not isinstance(table, dict):
        return None
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in OPTION_NAMES:
            close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
            raise ConfigError(
                f"{path}: [tool.openflash] has no setting {key!r}",
                hint=(f"did you mean {close[0].replace('_', '-')!r}? " if close else "")
                + "the settings are "
                + ", ".join(n.replace("_", "-") for n in OPTION_NAMES),
            )
        values[name] = value
    return uv_options(**values, base_dir=path.parent, where=f"{path} [tool.openflash]")
