"""Which Debian package ships a shared library that failed to load."""

from __future__ import annotations

import re

__all__ = ["missing_library", "package_for_library"]

#: Libraries whose package name the Debian naming rule does not give.
LIBRARY_TO_PACKAGE = {
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libGLU.so.1": "libglu1-mesa",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libgobject-2.0.so.0": "libglib2.0-0",
    "libgio-2.0.so.0": "libglib2.0-0",
    "libgmodule-2.0.so.0": "libglib2.0-0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libX11.so.6": "libx11-6",
    "libXext.so.6": "libxext6",
    "libXrender.so.1": "libxrender1",
    "libXi.so.6": "libxi6",
    "libXtst.so.6": "libxtst6",
    "libxcb.so.1": "libxcb1",
    "libsndfile.so.1": "libsndfile1",
    "libportaudio.so.2": "libportaudio2",
    "libasound.so.2": "libasound2",
    "libgomp.so.1": "libgomp1",
    "libstdc++.so.6": "libstdc++6",
    "libpango-1.0.so.0": "libpango-1.0-0",
    "libcairo.so.2": "libcairo2",
    "libatk-1.0.so.0": "libatk1.0-0",
    "libgtk-3.so.0": "libgtk-3-0",
    "libnss3.so": "libnss3",
    "libdbus-1.so.3": "libdbus-1-3",
    "libmagic.so.1": "libmagic1",
    "libzbar.so.0": "libzbar0",
}

_CANNOT_OPEN = re.compile(r"([\w.+-]+\.so(?:\.[\w.]+)?): cannot open shared object file")
_SONAME = re.compile(r"^(lib[\w.+-]+?)\.so\.([\w.]+)$")


def missing_library(message: str) -> str | None:
    """The library named by a loader error such as ``libGL.so.1: cannot open shared object``."""
    match = _CANNOT_OPEN.search(message)
    return match[1] if match else None


def package_for_library(soname: str) -> str:
    """The Debian package that ships ``soname`` (``libGL.so.1`` -> ``libgl1``).

    A table for the common ones, else Debian's naming rule: ``libfoo.so.6`` is in ``libfoo6``,
    ``libfoo2.so.0`` (a name ending in a digit) in ``libfoo2-0``.
    """
    if soname in LIBRARY_TO_PACKAGE:
        return LIBRARY_TO_PACKAGE[soname]
    match = _SONAME.match(soname)
    if not match:
        return soname.split(".so")[0].lower().replace("_", "-")
    base, version = match[1].lower().replace("_", "-"), match[2]
    return f"{base}-{version}" if base[-1].isdigit() else f"{base}{version}"
