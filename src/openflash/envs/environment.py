"""Build a virtual environment from a lock: ``uv venv`` and ``uv pip sync``, published atomically.

Packages are hardlinked from uv's cache (keep FLASH_UV_CACHE_DIR on FLASH_HOME's disk) and so is
their bytecode, from the store's bytecode cache (envs.bytecode): workers run with
PYTHONDONTWRITEBYTECODE on this kind of machine, and imports without .pyc files were measured
about 4x slower.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import sys_tags

from openflash import _subprocess
from openflash.envs.bytecode import link_bytecode
from openflash.envs.local_sources import local_paths, local_sources_digest
from openflash.envs.store import Store, content_key
from openflash.envs.uv import run_pinned, tighten_lock_files, uv_argv, uv_environ
from openflash.envs.uv_options import NO_OPTIONS, UvOptions
from openflash.errors import EnvironmentBuildError

__all__ = [
    "ENV_FORMAT",
    "Environment",
    "build_environment",
    "environment_key",
    "platform_tag",
    "python_tag",
]

#: Bumped whenever the layout of a built environment changes.
ENV_FORMAT = 1
LOCK_FILE = "openflash-lock.txt"
BUILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Environment:
    key: str
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def python_tag() -> str:
    impl = sys.implementation
    return f"{impl.name}-{impl.version.major}.{impl.version.minor}.{impl.version.micro}"


def platform_tag() -> str:
    """The most specific wheel tag this interpreter accepts (cp311-cp311-manylinux_2_36_x86_64)."""
    return str(next(iter(sys_tags())))


def environment_key(lock_text: str, options: UvOptions = NO_OPTIONS) -> str:
    """The identity of an environment: the lock, the install options (index, build flags: the
    same pin from another index may be another file), the Python, the platform, the format.

    A local wheel, sdist or project folder is named by its path in the lock; the digest of its
    contents (envs.local_sources) is part of the key too, so a rebuilt wheel or an edited project
    gets a new environment.
    """
    pins = "".join(f"{line}\n" for line in sorted(_without_hashes(lock_text)))
    files = local_sources_digest(pins.splitlines())
    parts: tuple[object, ...] = (pins, files, python_tag(), platform_tag(), ENV_FORMAT)
    if options:  # keys of environments built without options stay as they were
        parts = (*parts, options.digest())
    return content_key("env", *parts)


def _without_hashes(lock_text: str) -> list[str]:
    """The pins of a lock; hashes (``flash.lock``'s) do not change what is installed."""
    return [
        " ".join(t for t in line.split() if not t.startswith("--hash="))
        for line in _lines(lock_text)
    ]


def build_environment(
    store: Store, lock_text: str, *, uv_cache: Path, options: UvOptions = NO_OPTIONS
) -> Environment:
    """The environment for ``lock_text`` (pinned requirement lines), built once per key, with
    ``options`` (where packages come from, how they build)."""
    key = environment_key(lock_text, options)

    def build(tmp: Path) -> dict[str, object]:
        _subprocess.report(f"building environment {key} ({len(_lines(lock_text))} packages)")
        try:
            _build_venv(tmp, lock_text, uv_cache, options)
        finally:
            tighten_lock_files(uv_cache, store.root)
        bytecode = {}
        if _lines(lock_text):
            site_packages = next((tmp / "lib").glob("python*/site-packages"))
            bytecode = link_bytecode(site_packages, tmp / "bin" / "python", store.bytecode)
        return {
            "bytecode": bytecode,
            "python": python_tag(),
            "platform": platform_tag(),
            "packages": len(_lines(lock_text)),
        }

    return Environment(key, store.build_once("envs", key, build))


def summarize_uv_failure(stderr: str, tail: int = 12) -> str:
    """uv's own lines (``error:``, ``cause:``, ``hint:``) first, then the last lines of output.

    A failed build prints a long traceback from the package's build; what failed is in uv's
    lines at the top.
    """
    lines = stderr.splitlines()
    own = [line.strip() for line in lines if re.match(r"^\s*(error|cause|hint|help):", line)]
    rest = [line for line in lines[-tail:] if line.strip() and line.strip() not in own]
    return "\n".join([*own[:8], *(["..."] if rest else []), *rest])


def _lines(lock_text: str) -> list[str]:
    return [line for line in lock_text.splitlines() if line.strip()]


def _build_venv(target: Path, lock_text: str, uv_cache: Path, options: UvOptions) -> None:
    env = uv_environ()
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    _subprocess.run(
        uv_argv(
            "venv",
            "--quiet",
            "--relocatable",
            "--python",
            base_python,
            str(target),
            cache_dir=uv_cache,
        ),
        env=env,
        timeout=120,
        error=EnvironmentBuildError,
    )
    lock_file = target / LOCK_FILE
    lock_file.write_text(lock_text)
    if not _lines(lock_text):
        return

    # uv keeps a local project's build by its pyproject.toml's age: rebuild what is local.
    local = [a for name, _ in local_paths(_lines(lock_text)) for a in ("--refresh-package", name)]
    with options.arguments() as flags:
        done = run_pinned(
            "pip",
            "sync",
            str(lock_file),
            *local,
            *flags,
            "--python",
            str(target / "bin" / "python"),
            "--link-mode",
            "hardlink",
            cache_dir=uv_cache,
            timeout=BUILD_TIMEOUT_S,
            environ=options.environ(),
        )
    if not done.ok:
        raise EnvironmentBuildError(
            f"installing the environment's packages failed:\n{summarize_uv_failure(done.stderr)}",
            hint="check that every pinned package has a release for this platform (a wheel); "
            "nothing was kept from this attempt",
        )
