"""``openflash.requirements("requirements.txt")``: a pip requirements file as ``dependencies``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from openflash.deps.requirements_files import read_requirements
from openflash.errors import ConfigError

__all__ = ["requirements", "requirements_at"]


def requirements(path: str | os.PathLike[str]) -> list[str]:
    """The requirements listed in a pip requirements file, for ``dependencies=``.

    ``path`` is read with pip's ``-r`` semantics, parsed by uv (deps/requirements_files.py):
    comments, line continuations, ``-r`` includes, markers, extras and ``--hash`` options. A
    relative path starts at the directory of the calling file (the decorated function's), not
    the working directory. Returns PEP 508 strings, which may be added to::

        @remote(config, dependencies=[*openflash.requirements("requirements.txt"), "tqdm"])

    Raises ``DependencyError`` naming the file when it is missing or uv cannot parse it, and
    the file and line of an installer option (``--index-url``, ``-c constraints.txt``), which
    is not applied: the error says which ``remote()`` option or uv variable does the same.
    """
    caller = sys._getframe(1).f_globals.get("__file__")
    return read_requirements(
        requirements_at(path, Path(caller).resolve().parent if caller else None)
    )


def requirements_at(
    path: str | os.PathLike[str], base_dir: Path | None, where: str = "requirements"
) -> Path:
    """The requirements file ``path`` names (relative to ``base_dir``, else the working
    directory), for ``requirements()`` and ``remote(requirements="requirements.txt")``.
    Raises ConfigError when ``path`` is not a path."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigError(
            f"{where} must be the path of a requirements file, got {path!r}",
            hint='write requirements="requirements.txt" (relative to the decorated file)',
        )
    file = Path(path).expanduser()
    return file if file.is_absolute() else (base_dir or Path.cwd()) / file
