"""Processes still writing into what a dead builder left in the store's ``tmp/``.

A builder that died without killing its commands (an openflash older than the parent-death
signal of ``openflash._subprocess``, a machine without ``setpriv``) can leave a uv or apt running,
orphaned, writing into its ``tmp/`` folder: a sweep that only removed the folder would see it
made again. Before ``Store.sweep_tmp`` removes a dead builder's folder it kills, with SIGKILL,
this user's processes whose command line names that folder or a path inside it (uv's
``--python tmp/envs-.../bin/python``, a venv's own interpreter); nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

__all__ = ["kill_writers", "writers"]


def writers(folder: Path) -> list[int]:
    """This user's processes (not this one) whose command line names ``folder`` or a path in it."""
    named = os.fsencode(folder)
    inside = named.rstrip(b"/") + b"/"
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc here: nothing to find
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != os.getuid():
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(arg == named or inside in arg for arg in argv):
            found.append(int(entry))
    return found


def kill_writers(folder: Path) -> int:
    """SIGKILL ``writers(folder)``; how many there were."""
    found = writers(folder)
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(found)
