"""Installer options inside a pip requirements file, applied where ``requirements=`` reads it.

``remote(requirements="requirements.txt")`` reads a file as ``pip install -r`` does, options
included: ``-i/--index-url``, ``--extra-index-url``, ``-f/--find-links`` (a folder relative to
the file), ``--pre``, ``--no-build-isolation`` and ``-c/--constraint`` files become the
endpoint's install options (envs/uv_options.py; a keyword written on the decorator wins). Each
option line is split with ``shlex`` and parsed with ``argparse``, as pip parses them; any other
option (``--only-binary``, ``--trusted-host``, ...) is refused naming the file and the line.
``openflash.requirements()``, which returns strings only, refuses them all (requirements_files).
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path

from openflash._subprocess import redact
from openflash.deps.pip_options import option_hint
from openflash.errors import DependencyError

__all__ = ["FileOptions", "parse_option_line"]


@dataclass(frozen=True, slots=True)
class FileOptions:
    """What a requirements file's option lines ask for (its ``-r`` includes' too)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    pre: bool = False
    no_build_isolation: bool = False
    #: Constraint files, absolute.
    constraint_files: tuple[Path, ...] = ()

    def keywords(self) -> dict[str, object]:
        """The options as ``remote()``'s keywords (those that are set)."""
        found: dict[str, object] = {
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls) or None,
            "find_links": list(self.find_links) or None,
            "prerelease": "allow" if self.pre else None,
            "no_build_isolation": True if self.no_build_isolation else None,
        }
        return {k: v for k, v in found.items() if v is not None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False, allow_abbrev=False)
    parser.add_argument("-i", "--index-url")
    parser.add_argument("--extra-index-url", action="append", default=[])
    parser.add_argument("-f", "--find-links", action="append", default=[])
    parser.add_argument("--pre", action="store_true")
    parser.add_argument("--no-build-isolation", action="store_true")
    parser.add_argument("-c", "--constraint", action="append", default=[])
    return parser


def parse_option_line(line: str, path: Path, number: int, into: FileOptions) -> FileOptions:
    """``into`` with the option of ``line`` (line ``number`` of ``path``) added. Raises
    DependencyError naming the file and the line for an option that is not applied."""
    try:
        given, rest = _parser().parse_known_args(shlex.split(line))
    except (argparse.ArgumentError, ValueError):
        given, rest = None, ["?"]
    if given is None or rest:
        raise DependencyError(
            f"the requirements file {str(path)!r}, line {number}: {redact(line)!r} is an "
            "installer option that requirements= does not apply",
            hint=option_hint(line) or "pip options are not dependencies; list requirements only",
        )
    links = tuple(
        str((path.parent / v).resolve()) if "://" not in v else v for v in given.find_links
    )
    constraints = tuple((path.parent / v).resolve() for v in given.constraint)
    return FileOptions(
        index_url=given.index_url or into.index_url,
        extra_index_urls=(*into.extra_index_urls, *given.extra_index_url),
        find_links=(*into.find_links, *links),
        pre=into.pre or given.pre,
        no_build_isolation=into.no_build_isolation or given.no_build_isolation,
        constraint_files=(*into.constraint_files, *constraints),
    )
