"""``openflash.requirements("requirements.txt")``: a pip requirements file as ``dependencies``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from openflash.deps.requirements_files import read_requirements

__all__ = ["requirements"]


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
    file = Path(path).expanduser()
    if not file.is_absolute():
        caller = sys._getframe(1).f_globals.get("__file__")
        base = Path(caller).resolve().parent if caller else Path.cwd()
        file = base / file
    return read_requirements(file)
