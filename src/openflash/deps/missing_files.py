"""A worker that failed on a missing system file (``/usr/share/...``, ``/etc/...``): which file,
and a hint naming the layer mode and the packages the endpoint declares."""

from __future__ import annotations

import re

from openflash.deps.namespace_mode import LayerMode

__all__ = ["missing_file_hint", "missing_system_file"]

_MISSING = re.compile(
    r"(?:No such file or directory|[Ee]rror opening|[Cc]annot open|[Nn]ot found|"
    r"does not exist|[Ff]ailed to (?:open|load|read))"
)
_SYSTEM_PATH = re.compile(r"(/(?:usr|etc|lib|lib64|var/lib|opt)/[^\s'\",:;()]+)")


def missing_system_file(message: str) -> str | None:
    """The system path an error says is missing (``Error opening data file /usr/share/x``,
    ``[Errno 2] No such file or directory: '/usr/lib/y'``), or None."""
    if not _MISSING.search(message):
        return None
    match = _SYSTEM_PATH.search(message)
    return match[1].rstrip(".") if match else None


def missing_file_hint(path: str, mode: LayerMode, endpoint: str, system_deps: list[str]) -> str:
    """What to do about ``path``, given how layers reach workers here."""
    declared = ", ".join(system_deps) or "none"
    hint = (
        f"{path} is a system file: the Debian package that ships it must be in "
        f"system_dependencies=[...] of endpoint {endpoint!r} (declared: {declared}); "
        f"system layers here are in the {mode.name} mode ({mode.reason})"
    )
    if mode.namespaces:
        return hint + ", so a declared package's files are at their real paths"
    return hint + (
        ": the layer is not at /usr but in the store, so programs with built-in data paths "
        "cannot find it (only PATH, LD_LIBRARY_PATH, XDG_DATA_DIRS, TESSDATA_PREFIX and the "
        "like point there); run where unprivileged user namespaces work for real paths"
    )
