"""The relocated mode's ``ctypes.util.find_library``: a system layer's libraries found first.

Run as ``python -m openflash.workers.library_shim MODULE ARG...`` with ``OPENFLASH_LIBRARY_DIRS``
naming the layer's library folders (``os.pathsep``-separated). It wraps
``ctypes.util.find_library`` so that it looks in those folders first, then runs
``python -m MODULE ARG...`` in the same process (``runpy``: the wrapper must stay in place;
a template's forks inherit it).

Why: without a namespace (``FLASH_NAMESPACES=off``, or a kernel that refuses it) the layer stays
in ``FLASH_HOME/layers/<key>/``; the loader finds its libraries through ``LD_LIBRARY_PATH``, but
CPython's ``find_library`` reads the ldconfig cache (then gcc and ld, absent on most hosts), so
find_library-based wrappers (pyzbar, python-magic, ...) fail "Unable to find ... shared library".

``find_library(name)`` answers as on Linux, a file name (``libzbar.so.0``) rather than a path:
the layer's folders are on ``LD_LIBRARY_PATH``, so ``ctypes.CDLL`` of it loads the layer's copy.
Among ``lib<name>.so*`` files of a folder it prefers a soname-like ``lib<name>.so.<major>`` (the
link Debian's runtime packages ship), then ``lib<name>.so``, then the shortest other name. A name
the layer lacks goes to the original ``find_library``. Workers without a layer never start
through this module, and nothing outside the worker's own process changes (no sitecustomize).

Standard library only: it runs in the worker's interpreter, before anything else.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import runpy
import sys
from collections.abc import Callable, Sequence

__all__ = ["LIBRARY_VARIABLE", "find_in", "install"]

#: The variable naming the layer's library folders.
LIBRARY_VARIABLE = "OPENFLASH_LIBRARY_DIRS"


def _preference(name: str, filename: str) -> tuple[int, int, str]:
    """Sort key: soname-like ``lib<name>.so.N`` first, then ``lib<name>.so``, then the rest."""
    rest = filename[len(f"lib{name}.so") :]
    if re.fullmatch(r"\.\d+", rest):
        return (0, -int(rest[1:]), filename)
    return (1 if not rest else 2, len(filename), filename)


def find_in(folders: Sequence[str], name: str) -> str | None:
    """The file name of library ``name`` (as in ``-l<name>``) in the first of ``folders`` that
    has one, or None."""
    pattern = re.compile(rf"lib{re.escape(name)}\.so(\.[0-9]+)*")
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found = [n for n in names if pattern.fullmatch(n)]
        if found:
            return min(found, key=lambda n: _preference(name, n))
    return None


def install(folders: Sequence[str]) -> Callable[[str], str | None]:
    """Make ``ctypes.util.find_library`` look in ``folders`` first; returns the original."""
    original: Callable[[str], str | None] = ctypes.util.find_library
    kept = [f for f in folders if f]

    def find_library(name: str) -> str | None:
        return find_in(kept, name) or original(name)

    find_library.__doc__ = original.__doc__
    ctypes.util.find_library = find_library
    return original


def main(argv: list[str]) -> None:
    """Install the wrapper for the folders ``OPENFLASH_LIBRARY_DIRS`` names, then run
    ``python -m argv...`` here."""
    if not argv:
        sys.exit("usage: python -m openflash.workers.library_shim MODULE ARG...")
    install(os.environ.get(LIBRARY_VARIABLE, "").split(os.pathsep))
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
