"""A pip requirements file (``pip install -r``) to the PEP 508 strings ``dependencies=`` takes.

uv parses the file, not openflash: it is handed to ``uv add --frozen --raw -r FILE`` in a
scratch project, which records each requirement as written (specifiers, extras, markers, direct
URLs) in the project's ``pyproject.toml`` without resolving anything; openflash reads them back
with ``tomllib``. So every construct pip's format allows is understood as uv understands it:
comments, line continuations, ``-r`` includes (relative to the including file), markers, extras,
and ``--hash`` options (dropped: the lock openflash makes pins hashes of its own with
``flash lock``).

Options that configure the installer rather than name a requirement (``--index-url``,
``--extra-index-url``, ``--find-links``, ``--pre``, ``-c`` constraint files, ...) are not
silently dropped: a line holding one, in the file or a ``-r`` include, is refused naming the file
and line, with what gives the same effect (deps/pip_options.py: ``index_url=`` and the other
install options of ``remote()``, ``UV_CONSTRAINT`` for a constraints file). Finding those lines
is the one reading done here: pip's logical lines (comments stripped, ``\\`` continuations
joined) that start with an option.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from openflash import _subprocess
from openflash._subprocess import redact
from openflash.deps.pip_options import option_hint
from openflash.deps.requirements_options import FileOptions, parse_option_line
from openflash.envs.uv import uv_argv, uv_environ
from openflash.errors import DependencyError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["read_requirements", "read_requirements_file"]

_SCRATCH_PROJECT = """\
[project]
name = "openflash-requirements"
version = "0"
requires-python = ">=3.8"
dependencies = []
"""
_COMMENT = re.compile(r"(^|\s+)#.*$")
_INCLUDE = re.compile(r"^(?:-r|--requirement)(?:\s*=?\s*)(\S+)$")
#: Options a requirements file may hold that uv's parse applies (includes, editables).
_KEPT = re.compile(r"^(-r|--requirement|-e|--editable)\b")


def read_requirements(path: Path) -> list[str]:
    """The requirements of the pip requirements file at ``path`` and the files it includes
    with ``-r``, as PEP 508 strings sorted by name (as uv writes them).

    Raises ``DependencyError`` naming the file when it does not exist, or with uv's message
    (which names the line) when uv cannot parse it. Takes about 0.1-0.4 s (one uv process).
    """
    if not path.is_file():
        raise DependencyError(
            f"the requirements file {str(path)!r} does not exist",
            hint="fix the path; a relative path starts at the directory of the file that "
            "calls openflash.requirements()",
        )
    _refuse_options(path, set())
    return _uv_parse(path, {})


def read_requirements_file(path: Path) -> tuple[list[str], FileOptions]:
    """``read_requirements``, with the file's installer options (and its includes') applied
    rather than refused (deps/requirements_options.py): for ``requirements=``."""
    if not path.is_file():
        raise DependencyError(
            f"the requirements file {str(path)!r} does not exist",
            hint="fix the path; a relative path starts at the decorated file's folder",
        )
    with tempfile.TemporaryDirectory(prefix="openflash-requirements-") as tmp:
        copies: dict[Path, Path] = {}
        options = _without_options(path.resolve(), Path(tmp), copies, FileOptions())
        if options == FileOptions():  # nothing to apply: uv reads the files themselves
            return _uv_parse(path, {}), options
        # (uv reads the copies: a relative path in them would start at the copy's folder.)
        shown = {str(copy): str(original) for original, copy in copies.items()}
        return _uv_parse(copies[path.resolve()], shown), options


def _without_options(
    path: Path, tmp: Path, copies: dict[Path, Path], options: FileOptions
) -> FileOptions:
    """Copy ``path`` (and its ``-r`` includes) into ``tmp`` with option lines blanked (line
    numbers kept) and includes pointing at the copies; ``options`` plus theirs."""
    if path in copies or not path.is_file():
        return options  # a loop, or a missing include: uv's parse reports it
    copy = copies[path] = tmp / f"{len(copies)}-{path.name}"
    raw = path.read_text(errors="replace").splitlines()
    out = list(raw)
    for number, line, end in _logical_spans(raw):
        if not line.startswith("-") or (_KEPT.match(line) and not _INCLUDE.match(line)):
            continue
        for index in range(number - 1, end):
            out[index] = ""
        include = _INCLUDE.match(line)
        if include:
            target = (path.parent / include[1]).resolve()
            options = _without_options(target, tmp, copies, options)
            out[number - 1] = f"-r {copies.get(target, target)}"
        else:
            options = parse_option_line(line, path, number, options)
    copy.write_text("\n".join(out) + "\n")
    return options


def _logical_spans(raw: list[str]) -> list[tuple[int, str, int]]:
    """``_logical_lines`` with each one's last physical line number."""
    spans = []
    for start, line in _logical_lines("\n".join(raw)):
        end = start
        while end < len(raw) and _COMMENT.sub("", raw[end - 1]).endswith("\\"):
            end += 1
        spans.append((start, line, end))
    return spans


def _uv_parse(path: Path, shown: dict[str, str]) -> list[str]:
    """The requirements uv reads in ``path`` (``shown`` maps copies' paths to the originals
    named in its errors)."""
    with tempfile.TemporaryDirectory(prefix="openflash-requirements-") as tmp:
        project = Path(tmp)
        (project / "pyproject.toml").write_text(_SCRATCH_PROJECT)
        argv = uv_argv(
            "add",
            "--frozen",
            "--raw",
            "--no-config",
            "--quiet",
            "--python",
            sys.executable,
            "--directory",
            str(project),
            "-r",
            str(path.resolve()),
            cache_dir=project / "uv-cache",
        )
        done = _subprocess.run(
            argv, env=uv_environ(), timeout=120, check=False, error=DependencyError
        )
        if not done.ok:
            message = done.stderr.strip().removeprefix("error: ")
            for copy, original in shown.items():
                message = message.replace(copy, original)
            path = Path(shown.get(str(path), str(path)))
            raise DependencyError(
                f"the requirements file {str(path)!r} could not be read: {message}",
                hint="fix the named line; the format is pip's (pip install -r)",
            )
        data = tomllib.loads((project / "pyproject.toml").read_text())
    return [str(spec) for spec in data["project"].get("dependencies", [])]


def _refuse_options(path: Path, seen: set[Path]) -> None:
    """Raise DependencyError at the first installer option of ``path`` or its ``-r`` includes,
    naming the file, the line and what to do instead."""
    path = path.resolve()
    if path in seen or not path.is_file():
        return  # a loop, or a missing include: uv's parse reports it
    seen.add(path)
    for number, line in _logical_lines(path.read_text(errors="replace")):
        if not line.startswith("-"):
            continue
        include = _INCLUDE.match(line)
        if include:
            _refuse_options(path.parent / include[1], seen)
            continue
        if _KEPT.match(line):
            continue
        hint = option_hint(line) or "pip options are not dependencies; list requirements only"
        if line.startswith(("-c", "--constraint")):
            value = line.split(None, 1)[1] if " " in line else line[2:].lstrip("=")
            hint = option_hint(f"-c {(path.parent / value.strip()).resolve()}") or hint
        raise DependencyError(
            f"the requirements file {str(path)!r}, line {number}: {redact(line)!r} is an "
            "installer option, which openflash.requirements() does not apply",
            hint=f"{hint}; or pass the file as requirements= to remote() or Endpoint(), which "
            "applies the installer options pip applies",
        )


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """pip's logical lines of a requirements file, with the number of each one's first line:
    comments stripped, backslash continuations joined, blank lines dropped."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        line = _COMMENT.sub("", raw)
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            lines.append((start, joined))
    if pending.strip():
        lines.append((start, pending.strip()))
    return lines
