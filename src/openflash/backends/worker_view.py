"""What a local worker sees of the machine besides its environment: its own home, its volume,
and the namespace that shows both (with its system layer) at their paths.

- **Home.** Each (environment, layer) pair has a home of its own in the environment's folder of
  the store (removed with it): ``<env>/openflash-home/<layer key, or "no-layer">``, with
  ``HOME``, ``XDG_CACHE_HOME``, ``XDG_CONFIG_HOME``, ``XDG_DATA_HOME`` and ``XDG_STATE_HOME``
  inside it. A cache one endpoint writes (matplotlib's font list, fontconfig's cache) therefore
  never hides another endpoint's packages, and the caller's ``HOME`` is never written by a worker.
- **Volume.** ``NetworkVolume(name=...)`` is the folder ``FLASH_VOLUMES/<name>``. In a
  namespace it is mounted at ``/runpod-volume``, as on Runpod; without one (the relocated mode)
  ``FLASH_VOLUME_PATH`` names the folder itself (a real folder, no symlink). Both modes set
  ``FLASH_VOLUME_PATH``, so ``os.environ.get("FLASH_VOLUME_PATH", "/runpod-volume")`` works
  everywhere.
- **Libraries.** Without a namespace, ``OPENFLASH_LIBRARY_DIRS`` names the layer's library
  folders, and the worker starts through ``workers.library_shim`` (``worker_main``), whose
  ``ctypes.util.find_library`` looks there first.
"""

from __future__ import annotations

import os
from pathlib import Path

from openflash.deps.namespace_mode import namespace_env
from openflash.envs.trust import check_owner
from openflash.workers.library_shim import LIBRARY_VARIABLE
from openflash.workers.port import WorkerSpec

__all__ = [
    "VOLUME_MOUNT",
    "VOLUME_VARIABLE",
    "make_worker_folders",
    "worker_home",
    "worker_main",
    "worker_view_env",
]

#: Where a worker in a namespace sees its volume (Runpod's path).
VOLUME_MOUNT = "/runpod-volume"
#: The variable naming the volume's folder as the worker sees it.
VOLUME_VARIABLE = "FLASH_VOLUME_PATH"

_XDG = {
    "XDG_CACHE_HOME": ".cache",
    "XDG_CONFIG_HOME": ".config",
    "XDG_DATA_HOME": ".local/share",
    "XDG_STATE_HOME": ".local/state",
}


def worker_home(env_dir: Path, layer: Path | None) -> Path:
    """The home of an environment's workers with ``layer`` (removed with the environment)."""
    return env_dir / "openflash-home" / (layer.name if layer is not None else "no-layer")


def worker_view_env(spec: WorkerSpec, env_dir: Path, in_namespace: bool) -> dict[str, str]:
    """The variables giving a worker of ``spec`` its home and volume; with ``in_namespace``,
    the one telling the launcher what to mount (layer, volume, the scratch root it needs)."""
    home = worker_home(env_dir, spec.layer)
    env = {"HOME": str(home), **{name: str(home / sub) for name, sub in _XDG.items()}}
    if spec.volume is not None:
        env[VOLUME_VARIABLE] = VOLUME_MOUNT if in_namespace else str(spec.volume)
    libraries = spec.paths.get("LD_LIBRARY_PATH", ())
    if spec.layer is not None and not in_namespace and libraries:
        env[LIBRARY_VARIABLE] = os.pathsep.join(libraries)  # workers.library_shim reads it
    if in_namespace:
        root = home.parent / ".namespace-root" if spec.volume is not None else None
        env.update(namespace_env(spec.layer, volume=spec.volume, root=root, pid=True))
    return env


def worker_main(env: dict[str, str], main: list[str]) -> list[str]:
    """``MODULE ARG...`` to run with ``python -m``: ``main``, through the find_library shim where
    ``env`` names a relocated layer's libraries."""
    if LIBRARY_VARIABLE in env:
        return ["openflash.workers.library_shim", *main]
    return main


def make_worker_folders(env: dict[str, str], volume: Path | None) -> None:
    """Create the home and XDG folders ``env`` names (this user's only, whatever the umask),
    the namespace's scratch root, and the volume's folder (shared: the umask's mode)."""
    home = Path(env["HOME"])
    for folder in (home.parent, home):
        check_owner(folder)  # in the store: another user's (or a link) is refused, not used
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
    for sub in _XDG.values():
        folder = home
        for part in Path(sub).parts:  # each level this user's only (mkdir's parents= is not)
            folder = folder / part
            check_owner(folder)
            folder.mkdir(mode=0o700, exist_ok=True)
            folder.chmod(0o700)
    if volume is not None:
        (home.parent / ".namespace-root").mkdir(mode=0o700, exist_ok=True)
        volume.mkdir(parents=True, exist_ok=True)
