"""``openflash.requirements("requirements.txt")``: a pip requirements file as ``dependencies``."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from openflash.deps.project_defaults import project_options
from openflash.deps.requirements_files import read_requirements, read_requirements_file
from openflash.deps.specs import normalize_dependencies
from openflash.envs.uv_options import UvOptions, uv_options
from openflash.errors import ConfigError

__all__ = ["install_options", "requirements", "requirements_at"]


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


def install_options(
    dependencies: Iterable[str] | None,
    install: Mapping[str, Any],
    base_dir: Path | None,
    where: str,
) -> tuple[tuple[str, ...], UvOptions]:
    """A decorator's ``dependencies`` (normalised, relative paths from ``base_dir``) and its
    install options (``remote``'s keywords that are not None, over ``[tool.openflash]``).

    A ``requirements`` file adds its requirements to the dependencies and its installer options
    (``--index-url``, ``--find-links``, ``-c`` constraint files, ...) to the options; what the
    decorator itself says wins. Raises ConfigError or DependencyError naming the bad value."""
    given = {k: v for k, v in install.items() if v is not None}
    deps = normalize_dependencies(dependencies, base_dir=base_dir)
    constraints: list[str] = []
    if "requirements" in given:  # a pip requirements file: dependencies and its options
        file = requirements_at(given.pop("requirements"), base_dir, where=f"{where}: requirements")
        listed, in_file = read_requirements_file(file)
        deps = normalize_dependencies([*deps, *listed], base_dir=base_dir)
        given = {**in_file.keywords(), **given}  # what the decorator says wins
        constraints = [c for f in in_file.constraint_files for c in read_requirements(f)]
    options = uv_options(**given, base_dir=base_dir, where=where).over(project_options(base_dir))
    if constraints:
        options = dataclasses.replace(options, constraints=tuple(constraints))
    return tuple(deps), options
