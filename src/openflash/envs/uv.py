"""How openflash calls uv: the binary shipped by the ``uv`` package, with openflash's cache."""

from __future__ import annotations

import functools
import os
from pathlib import Path

__all__ = ["uv_argv", "uv_environ"]

# Variables that would point uv at another environment or project than the one we name.
_DROPPED = ("VIRTUAL_ENV", "CONDA_PREFIX", "UV_PYTHON", "UV_SYSTEM_PYTHON", "UV_CACHE_DIR")


@functools.lru_cache(maxsize=1)
def _uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def uv_argv(*args: str, cache_dir: Path) -> list[str]:
    """``uv <args> --cache-dir <cache_dir>`` as an argv list."""
    return [_uv_bin(), *args, "--cache-dir", str(cache_dir)]


def uv_environ() -> dict[str, str]:
    """The environment uv runs with: ours, minus what would redirect it, without progress bars."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env["UV_NO_PROGRESS"] = "1"
    env["NO_COLOR"] = "1"
    return env
