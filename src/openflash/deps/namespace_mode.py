"""How system layers reach workers on this machine: at their real paths, or relocated.

``"namespace"``: workers run in a private user and mount namespace with their layer overlaid,
read-only, at the packages' own paths (``openflash.workers.namespace``); compiled-in data paths
(tesseract's ``/usr/share/tesseract-ocr``), the layer's ``ld.so.cache`` (``ctypes.util.
find_library``) and ``/etc`` files all work. It needs unprivileged user namespaces and overlayfs
in them (Linux >= 5.11; Debian's default). Workers also get a PID namespace of their own, with
their own ``/proc``: a worker sees only its namespace's processes, so the caller's
``/proc/<pid>/environ`` (its variables, keys included) is out of its reach.

``"relocated"``: the layer stays in ``FLASH_HOME/layers/<key>/`` and workers find it through
variables (PATH, LD_LIBRARY_PATH, XDG_DATA_DIRS, TESSDATA_PREFIX, ...) and the per-package fixups
of ``deps.system``; ``ctypes.util.find_library`` looks in the layer's library folders first
(``workers.library_shim``). What it cannot do: programs with other compiled-in absolute paths.
Chosen where the probe fails (a hardened kernel, Ubuntu's AppArmor restriction, macOS), or forced
by ``FLASH_NAMESPACES=off``. Workers then have no PID isolation: they run as the caller's user
in the caller's PID namespace and can read ``/proc/<caller pid>/environ`` (the mode's reason
says so), unless the caller marked itself not dumpable, as ``flash run`` does
(``FLASH_NON_DUMPABLE``, runtime/dumpable.py).

The probe runs once per process: it overlays a scratch folder over ``/usr`` in a namespace of
its own, with a PID namespace, and reads a file back through it and its own pid (2, under the
namespace's init).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from openflash import _subprocess
from openflash.errors import FlashError
from openflash.workers import namespace as launcher

__all__ = [
    "NO_PID_ISOLATION",
    "LayerMode",
    "layer_mode",
    "namespace_argv",
    "namespace_env",
    "run_in_layer",
]

_PROBE_FILE = "openflash-probe"
_LAUNCHER = "openflash.workers.namespace"


@dataclass(frozen=True)
class LayerMode:
    """The way layers reach workers here, and why (for ``flash env ls``, ``flash check``)."""

    #: "namespace" or "relocated".
    name: str
    #: Why, in a few words (the probe's error, or the setting).
    reason: str
    #: Whether workers run in a PID namespace of their own (the namespace mode).
    pid_isolation: bool = False

    @property
    def described(self) -> str:
        """``namespace mode (why); workers ...``: the mode, why, and what it means for PIDs."""
        pids = (
            "workers have a PID namespace of their own" if self.pid_isolation else NO_PID_ISOLATION
        )
        return f"{self.name} mode ({self.reason}); {pids}"

    @property
    def namespaces(self) -> bool:
        return self.name == "namespace"


def layer_mode(enabled: bool = True) -> LayerMode:
    """This machine's mode; ``enabled=False`` (``FLASH_NAMESPACES=off``) forces "relocated"."""
    if not enabled:
        return LayerMode("relocated", "FLASH_NAMESPACES=off")
    failure = _probe()
    if failure:
        return LayerMode("relocated", f"user, mount and PID namespaces are unavailable: {failure}")
    return LayerMode("namespace", "workers see their layer at its real paths", pid_isolation=True)


#: What the relocated mode lacks (``LayerMode.described``).
NO_PID_ISOLATION = "workers have no PID isolation: they can read their caller's /proc/<pid>/environ"


def namespace_env(
    layer: Path | None, *, volume: Path | None = None, root: Path | None = None, pid: bool = False
) -> dict[str, str]:
    """The variable the launcher reads: what it mounts (the layer at its real paths; a volume at
    /runpod-volume, in a new root built on the empty folder ``root``), and with ``pid``, a PID
    namespace with its own /proc."""
    config = {
        "layer": str(layer) if layer else None,
        "volume": str(volume) if volume else None,
        "root": str(root) if root else None,
        "pid": pid,
    }
    return {"OPENFLASH_NAMESPACE": json.dumps(config)}


def namespace_argv(python: str | Path, module_argv: Sequence[str]) -> list[str]:
    """``python -m MODULE ARG...`` run through the launcher (which execs it once mounted)."""
    return [str(python), "-m", _LAUNCHER, *module_argv]


def run_in_layer(
    layer: Path,
    argv: Sequence[str],
    *,
    timeout: float,
    error: type[FlashError],
    env: dict[str, str] | None = None,
    pid: bool = False,
) -> _subprocess.Completed:
    """Run ``argv`` in a namespace where ``layer`` is overlaid at its real paths.

    The launcher runs as a file (``-I -S``: no site, no openflash package import), so a run
    costs an interpreter's bare start-up, not openflash's import). ``env``: variables added;
    ``pid``: in a PID namespace too."""
    return _subprocess.run(
        [sys.executable, "-I", "-S", launcher.__file__, "--exec", *argv],
        env={**os.environ, **(env or {}), **namespace_env(layer, pid=pid)},
        timeout=timeout,
        error=error,
        hint="the layer's files could not be set up at their real paths",
    )


@functools.cache
def _probe() -> str:
    """ "" where a layer can be overlaid in a namespace, else what went wrong."""
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no Linux namespaces"
    with tempfile.TemporaryDirectory(prefix="openflash-probe-") as scratch:
        name = f"{_PROBE_FILE}-{os.getpid()}"
        (Path(scratch) / "usr" / name).mkdir(parents=True)
        (Path(scratch) / "usr" / name / "ok").write_text("ok")
        try:
            done = run_in_layer(
                Path(scratch),
                ["cat", f"/usr/{name}/ok", "/proc/self/stat"],
                timeout=60,
                error=FlashError,
                pid=True,
            )
        except FlashError as e:
            return _subprocess.tail(str(e), 1)
        ok = done.stdout.startswith("ok2 (cat)")  # the file, then cat's pid: 2, under the init
        return "" if ok else f"read {done.stdout[:40]!r} back"
