"""What ``uv pip compile`` prints, parsed: the pinned lines (``parse_lock``), the yanked releases
it names (``yanked_warnings``, PEP 592), and the error a failure means (``failure_to_error``, uv's
explanation with its labels dropped). Pure functions over uv's text; deps/resolve.py runs uv.
"""

from __future__ import annotations

import logging
import re

from openflash import _subprocess
from openflash.errors import DependencyConflictError, DependencyError

__all__ = ["NETWORK", "failure_to_error", "parse_lock", "warn_yanked", "yanked_warnings"]

logger = logging.getLogger("openflash")

_NOT_FOUND = re.compile(r"Because (\S+) was not found in the package registry")
_NO_VERSION = re.compile(
    r"^Because there is no version of (\S+) and you require \1, we can conclude that your "
    r"requirements are unsatisfiable\.$"
)
NETWORK = re.compile(
    r"Failed to fetch|error sending request|tcp connect error|dns error|Connection refused|"
    r"timed out|Network is unreachable|Could not connect|network was disabled",
    re.IGNORECASE,
)
_YANKED = re.compile(r"`([^`]+)` is yanked(?: \(reason: \"(.*)\"\))?")


def parse_lock(stdout: str) -> str:
    """The pinned lines of ``uv pip compile`` output, comments and blank lines dropped, sorted."""
    lines = []
    for raw in stdout.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return "".join(f"{line}\n" for line in sorted(lines))


def yanked_warnings(stderr: str) -> tuple[str, ...]:
    """A warning for each yanked release uv's ``stderr`` names (``warning: `x==1.1` is yanked
    (reason: "...")``), with the index's reason."""
    found = []
    for match in _YANKED.finditer(stderr):
        reason = f" (reason: {match[2]!r})" if match[2] else ""
        found.append(
            f"{match[1]} is yanked from its index{reason}: pin another version, "
            "unless you mean to install this one"
        )
    return tuple(dict.fromkeys(found))


def warn_yanked(warnings: tuple[str, ...]) -> None:
    """Tell the user (the openflash logger, the progress channel) of yanked pins."""
    for text in warnings:
        _subprocess.report(f"warning: {text}")
        logger.warning("openflash: %s", text)


def failure_to_error(stderr: str, specs: tuple[str, ...]) -> DependencyError:
    """The error a failed ``uv pip compile`` means, with uv's explanation."""
    explanation = _explanation(stderr)
    listed = ", ".join(repr(s) for s in specs)
    missing = _NOT_FOUND.search(stderr)
    if missing:
        name = missing[1]
        # uv says why an index could not be asked (401: credentials), the URL without them.
        said = [
            line.split("hint:", 1)[1].strip()
            for line in stderr.splitlines()
            if line.strip().startswith("hint:")
        ]
        return DependencyError(
            f"package {name!r} was not found on the package index (dependencies: {listed})"
            + "".join(f"\n{line}" for line in said),
            hint="check the index URL and its credentials (index_url, extra_index_urls)"
            if said
            else f"check the spelling of {name!r} (https://pypi.org/project/{name}/), or remove it",
        )
    if "No solution found" in stderr:
        explanation = "\n".join(
            line for line in explanation.splitlines() if not line.startswith("No solution found")
        )
        no_version = _NO_VERSION.match(explanation)
        if no_version:
            return DependencyError(
                f"no release matches {no_version[1]!r} (dependencies: {listed})",
                hint="check the version on the package index, or relax the pin",
            )
        return DependencyConflictError(
            f"these dependencies cannot be installed together: {listed}\n{explanation}",
        )
    if NETWORK.search(stderr):
        return DependencyError(
            f"could not reach the package index to resolve {listed}:\n{explanation}",
            hint="check the network connection or the index settings (UV_INDEX_URL), then retry",
        )
    return DependencyError(
        f"resolving {listed} failed:\n{explanation}",
        hint="read uv's message above; fix the named requirement and call again",
    )


def _explanation(stderr: str) -> str:
    """uv's error text without its ``error:``/``cause:`` labels, indentation kept."""
    lines = []
    for raw in stderr.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.startswith(("Resolved ", "Using ")):
            continue
        line = re.sub(r"^(\s*)(?:error|cause|hint): ", r"\1", line)
        lines.append(line.strip())
    return "\n".join(lines)
