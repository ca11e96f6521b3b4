"""Dependency strings to a normalised, validated tuple, at decoration time.

Python dependencies are PEP 508 strings (parsed by ``packaging``), or a path to a local wheel.
System dependencies are Debian package names, optionally ``:arch`` and ``=version``. Both come out
sorted and de-duplicated, so that equal sets compare (and hash) equal.

Before parsing, a string is checked for what PEP 508 parsers tolerate but a user never means:
more than ``MAX_LENGTH`` characters, control characters, and characters outside ASCII (look-alikes
such as a Cyrillic ``е`` in ``rеquests``) anywhere but in a local file's path. A URL (PEP 508's
``name @ url``, PEP 440 direct references) must be ``https://``, ``file://`` (a wheel, an sdist
or a project folder; a plain path is taken relative to the decorated function's file) or a VCS
URL uv resolves: ``git+https://``, ``git+ssh://``, ``git+file://`` (``@ref`` optional; the
commit uv resolves is pinned in the lock).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from openflash.deps.pip_options import option_hint
from openflash.errors import DependencyError, SystemDependencyError

__all__ = ["MAX_LENGTH", "normalize_dependencies", "normalize_system_dependencies"]

#: The longest dependency string accepted (a long URL or marker fits; a pasted file does not).
MAX_LENGTH = 1000
#: The longest system dependency accepted (Debian's longest names are under 100 characters).
SYSTEM_MAX_LENGTH = 200
#: What may surround a dependency string (str.strip() would also eat control characters).
_BLANKS = " \t\r\n"
_URL_SCHEMES = ("https", "file", "git+https", "git+ssh", "git+file")
_CREDENTIALS = re.compile(r"://[^/@\s'\"]+@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")

_SINGLE_EQUALS = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*=\s*([0-9][^=<>!~,;\s]*)\s*$")
_DEBIAN = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]+)"
    r"(?::(?P<arch>[a-z0-9][a-z0-9-]*))?"
    r"(?:=(?P<version>(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*(?::[A-Za-z0-9.+~-]+)*))?$"
)


def normalize_dependencies(
    values: Iterable[object] | None, *, base_dir: Path | None = None
) -> tuple[str, ...]:
    """Validate and normalise ``dependencies=[...]``.

    Names are canonicalised (``Pillow`` and ``pillow`` are one package), duplicates merged (their
    version ranges intersected), and the result sorted. A bare ``*.whl`` path, or ``name @ path``,
    becomes ``name @ file:///absolute/path`` (relative paths start at ``base_dir``).
    Raises ``DependencyError`` naming the string, its index and why.
    """
    items = _as_list(values, "dependencies", DependencyError, "numpy")
    merged: dict[tuple[str, str], Requirement] = {}
    for index, value in enumerate(items):
        try:
            req = _parse_one(index, value, base_dir)
        except DependencyError as e:  # a password in a URL is not repeated
            e.message = _CREDENTIALS.sub("://***@", e.message)
            e.args = (e.message,)
            raise
        key = (req.name, str(req.marker or ""))
        if key in merged:
            _merge(merged[key], req, index, value)
        else:
            merged[key] = req
    return tuple(sorted(str(r) for r in merged.values()))


def normalize_system_dependencies(values: Iterable[object] | None) -> tuple[str, ...]:
    """Validate ``system_dependencies=[...]``: Debian names, optional ``:arch`` and ``=version``.

    Nothing here ever reaches a shell; this check makes sure nothing that looks like an option or
    shell syntax reaches apt's argument list either.
    """
    items = _as_list(values, "system_dependencies", SystemDependencyError, "ffmpeg")
    seen: set[str] = set()
    for index, value in enumerate(items):
        if not isinstance(value, str):
            raise SystemDependencyError(
                f"system_dependencies[{index}] is {value!r} ({type(value).__name__}), not a string"
            )
        text = value.strip(_BLANKS)  # a trailing newline (a line read from a file) is harmless
        _check_characters(
            f"system_dependencies[{index}]", text, SystemDependencyError, SYSTEM_MAX_LENGTH
        )
        if not _DEBIAN.match(text):
            raise SystemDependencyError(
                f"system_dependencies[{index}] {value!r} is not a Debian package name",
                hint=_debian_hint(text),
            )
        seen.add(text)
    return tuple(sorted(seen))


def _as_list(
    values: Iterable[object] | None, field: str, error: type[DependencyError], example: str
) -> list[object]:
    if values is None:
        return []
    if isinstance(values, (str, bytes)):
        raise error(
            f"{field} must be a list of strings, got the string {values!r}",
            hint=f"wrap it in a list: {field}=[{values!r}]",
        )
    try:
        return list(values)
    except TypeError as e:
        raise error(
            f"{field} must be a list of strings, got {type(values).__name__}",
            hint=f"pass a list such as {field}=[{example!r}]",
        ) from e


def _parse_one(index: int, value: object, base_dir: Path | None) -> Requirement:
    where = f"dependencies[{index}]"
    if not isinstance(value, str):
        raise DependencyError(
            f"{where} is {value!r} ({type(value).__name__}), not a string",
            hint="write each dependency as a string, e.g. 'numpy==1.26.2'",
        )
    text = value.strip(_BLANKS)  # a trailing newline (a line read from a file) is harmless
    _check_characters(where, text, DependencyError, MAX_LENGTH)
    if not text:
        raise DependencyError(
            f"{where} is an empty string",
            hint="remove it, or write a package name such as 'requests'",
        )
    if text.lower().endswith(".whl") and "@" not in text:
        return _wheel_requirement(where, value, text, base_dir)
    name_part, at, location = text.partition("@")
    _check_ascii(where, value, name_part, "package names, versions and markers")
    if at and not _is_local(location.strip()):
        _check_ascii(where, value, location, "URLs (write the host in punycode)")
    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        raise DependencyError(
            f"{where} {value!r} is not a valid requirement: {e}",
            hint=_requirement_hint(text),
        ) from e
    empty = next((spec for spec in req.specifier if not spec.version), None)
    if empty is not None:
        raise DependencyError(
            f"{where} {value!r} has the operator {empty.operator!r} without a version",
            hint=f"write a version after it, e.g. '{req.name}{empty.operator}1.0'",
        )
    req.name = canonicalize_name(req.name)
    req.extras = {canonicalize_name(x) for x in req.extras}
    if req.url is not None and "://" not in req.url:
        req.url = _local_file(where, value, req.url, base_dir).as_uri()
    elif req.url is not None:
        scheme = urlsplit(req.url).scheme.lower()
        if scheme not in _URL_SCHEMES:
            raise DependencyError(
                f"{where} {value!r} uses the URL scheme {scheme!r}; accepted are "
                + ", ".join(f"{s}://" for s in _URL_SCHEMES),
                hint=f"write e.g. '{req.name} @ git+https://github.com/owner/{req.name}@v1.0', "
                f"'{req.name} @ https://host/{req.name}-1.0-py3-none-any.whl' or a local path",
            )
        if scheme == "file":
            req.url = _local_file(where, value, req.url, base_dir).as_uri()
    return req


def _check_characters(
    where: str, value: str, error: type[DependencyError], max_length: int
) -> None:
    """Refuse over-long strings and control or invisible characters, naming the first."""
    if len(value) > max_length:
        raise error(
            f"{where} is {len(value)} characters long, over the limit of {max_length}: "
            f"{value[:40]!r}...",
            hint="write one requirement per string; a long list belongs in several strings",
        )
    found = _CONTROL.search(value)
    if found:
        raise error(
            f"{where} {value!r} contains the control or invisible character "
            f"{_describe(found.group())} at position {found.start()}",
            hint="retype the string: it may have been pasted with hidden characters",
        )


def _check_ascii(where: str, value: str, part: str, what: str) -> None:
    odd = next((ch for ch in part if not ch.isascii()), None)
    if odd is not None:
        raise DependencyError(
            f"{where} {value!r} contains the non-ASCII character {_describe(odd)}; {what} are "
            "ASCII",
            hint="retype it in plain ASCII: it may be a look-alike of a Latin letter or digit",
        )


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "") or ("control" if unicodedata.category(ch) == "Cc" else "")
    return f"{ch!r} (U+{ord(ch):04X} {name or 'unnamed'})"


def _is_local(location: str) -> bool:
    """Whether the part after ``@`` names a local file (a path, or a file: URL)."""
    return location.lower().startswith("file:") or "://" not in location


def _wheel_requirement(where: str, value: str, text: str, base_dir: Path | None) -> Requirement:
    path = _local_file(where, value, text, base_dir)
    try:
        name, *_ = parse_wheel_filename(path.name)
    except InvalidWheelFilename as e:
        raise DependencyError(
            f"{where} {value!r} is not a wheel file name: {e}",
            hint="use the file's original name, e.g. 'pkg-1.0-py3-none-any.whl'",
        ) from e
    return Requirement(f"{name} @ {path.as_uri()}")


def _local_file(where: str, value: str, text: str, base_dir: Path | None) -> Path:
    if text.startswith("file:"):
        text = text[len("file:") :]
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    path = path.resolve()
    if path.is_dir():
        if not any((path / f).is_file() for f in ("pyproject.toml", "setup.py", "setup.cfg")):
            raise DependencyError(
                f"{where} {value!r} names the folder {path}, which is not a Python project "
                "(no pyproject.toml, setup.py or setup.cfg)",
                hint="point at the folder that holds the project's pyproject.toml",
            )
        return path
    if not path.is_file():
        raise DependencyError(
            f"{where} {value!r} names a local path that does not exist: {path}",
            hint="fix the path; relative paths start at the directory of the decorated "
            "function's file",
        )
    return path


def _merge(into: Requirement, other: Requirement, index: int, value: object) -> None:
    if into.url != other.url:
        raise DependencyError(
            f"dependencies[{index}] {value!r} names {other.name!r} again with a different "
            f"source than {str(into)!r}",
            hint=f"keep one entry for {other.name!r}",
        )
    into.extras |= other.extras
    into.specifier = into.specifier & other.specifier


def _requirement_hint(text: str) -> str:
    single = _SINGLE_EQUALS.match(text)
    if single:
        return f"versions are pinned with '==': did you mean '{single[1]}=={single[2]}'?"
    if text.startswith("-"):
        return (
            option_hint(text) or "pip options are not dependencies; list package requirements only"
        )
    if " --hash" in text:
        return (
            "hashes are not part of a dependency: put the line in a requirements file and write "
            "dependencies=openflash.requirements('requirements.txt'), or let `flash lock` pin "
            "hashes"
        )
    words = text.split()
    if len(words) > 1 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", w) for w in words):
        return f"write one requirement per string: {words!r}"
    if re.search(r"~=\s*\d+\s*$", text):
        return "'~=' needs at least two version parts, e.g. 'requests~=2.31'"
    return DependencyError.hint


def _debian_hint(text: str) -> str:
    if text.lower() != text and _DEBIAN.match(text.lower()):
        return f"Debian package names are lower case: did you mean {text.lower()!r}?"
    if text.startswith("-"):
        return "apt options are not allowed; list package names only"
    if len(text.split()) > 1:
        return f"write one package per string: {text.split()!r}"
    return SystemDependencyError.hint
