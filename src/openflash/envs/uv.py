"""How openflash calls uv: the binary shipped by the ``uv`` package, with openflash's cache."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
from pathlib import Path

from openflash import _subprocess
from openflash.errors import EnvironmentBuildError

__all__ = ["backend_failed", "run_pinned", "tighten_lock_files", "uv_argv", "uv_environ"]

# Variables that would point uv at another environment or project than the one we name. uv's
# other variables (UV_INDEX_URL, UV_EXTRA_INDEX_URL, ...) are honoured; UV_CACHE_DIR is the
# default of FLASH_UV_CACHE_DIR (_settings.py), which every argv names with --cache-dir.
_DROPPED = ("VIRTUAL_ENV", "CONDA_PREFIX", "UV_PYTHON", "UV_SYSTEM_PYTHON")
_BACKEND_FAILED = re.compile(r"build backend returned an error|Call to `[^`]+\.build_\w+` failed")


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


def run_pinned(
    *args: str, cache_dir: Path, timeout: float, environ: dict[str, str] | None = None
) -> _subprocess.Completed:
    """``uv <args>`` for pinned requirements: from the cache alone first, from the index on a miss.

    Every package is pinned, so what uv's cache holds for a pin is what the index would serve;
    asking the index first costs a revalidation of every page. A build whose backend failed
    offline is not run again online: it would fail the same way, minutes later. ``environ``
    adds to uv's variables (an endpoint's index URLs). Returns the last attempt (not checked:
    the caller words the failure).
    """

    def attempt(*extra: str) -> _subprocess.Completed:
        return _subprocess.run(
            uv_argv(*args, *extra, cache_dir=cache_dir),
            env={**uv_environ(), **(environ or {})},
            timeout=timeout,
            check=False,
            error=EnvironmentBuildError,
        )

    done = attempt("--offline")
    return done if done.ok or backend_failed(done.stderr) else attempt()


def backend_failed(stderr: str) -> bool:
    """Whether uv's ``stderr`` says a package's build backend failed (the build ran and
    failed, rather than its build requirements being unavailable offline)."""
    return "Failed to build `" in stderr and bool(_BACKEND_FAILED.search(stderr))


def tighten_lock_files(cache_dir: Path, store_root: Path) -> None:
    """Take group and world write off uv's lock files in ``cache_dir``, if it is the store's.

    uv creates its flock files 0666 whatever the umask, so that users can share a cache
    (astral-sh/uv#16845); a cache inside a store of openflash's (the default) is one user's and
    writable by nobody else. A cache elsewhere (FLASH_UV_CACHE_DIR) keeps uv's choice. Lock files
    sit at the top of the cache and beside built wheels, never among unpacked archives, so the
    walk skips those (the bulk of a cache).
    """
    if not cache_dir.is_relative_to(store_root):
        return
    if not cache_dir.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(cache_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(("archive-v", "interpreter-v"))]
        for name in filenames:
            if name.endswith(".lock"):
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    st = os.lstat(path)
                    if st.st_mode & 0o022 and stat.S_ISREG(st.st_mode):
                        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o022)
