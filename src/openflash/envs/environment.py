"""Build a virtual environment from a lock: ``uv venv`` and ``uv pip sync``, published atomically.

Packages are hardlinked from uv's cache (keep FLASH_UV_CACHE_DIR on FLASH_HOME's disk) and so is
their bytecode, from the store's bytecode cache (envs.bytecode): workers run with
PYTHONDONTWRITEBYTECODE on this kind of machine, and imports without .pyc files were measured
about 4x slower.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import sys_tags

from openflash import _subprocess
from openflash.envs.build_failures import failed_build, recall, remember
from openflash.envs.bytecode import link_bytecode
from openflash.envs.bytecode_later import compile_later as compile_pending
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
#: uv's progress lines, not part of a failure's explanation.
_PROGRESS = re.compile(r"^\s*(Using Python |Resolved \d|Prepared \d|Audited \d|Building \S+$)")


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
    store: Store,
    lock_text: str,
    *,
    uv_cache: Path,
    options: UvOptions = NO_OPTIONS,
    retry_failed: bool = False,
    compile_later: bool = False,
) -> Environment:
    """The environment for ``lock_text`` (pinned requirement lines), built once per key, with
    ``options`` (where packages come from, how they build).

    With ``compile_later`` (FLASH_BYTECODE=background), bytecode the store lacks is compiled
    after publishing, by a detached process (envs/bytecode_later.py), also for an environment
    found published with its compiling unfinished.

    A pin whose source build failed here before (envs.build_failures) fails at once with the
    remembered reason, without building anything (unless ``retry_failed``: FLASH_RETRY_BUILDS);
    a build failing now is remembered."""
    key = environment_key(lock_text, options)
    here = (python_tag(), platform_tag())
    if not retry_failed and not store.is_ready("envs", key):
        failure = recall(store, lock_text, options=options, platform=here)
        if failure is not None:
            raise EnvironmentBuildError(
                f"{failure.requirement} failed to build from source here at "
                f"{time.ctime(failure.failed_at)}, and is not built again:\n{failure.reason}",
                hint="pin a release with a wheel for this platform, or fix the build (e.g. "
                "extra_build_dependencies); to try the same build again run `flash check "
                "--refresh` or set FLASH_RETRY_BUILDS=1",
            )

    def build(tmp: Path) -> dict[str, object]:
        _subprocess.report(f"building environment {key} ({len(_lines(lock_text))} packages)")
        try:
            _build_venv(tmp, lock_text, uv_cache, options)
        except _BuildFailed as e:
            remember(store, e.requirement, e.reason, options=options, platform=here)
            raise EnvironmentBuildError(
                f"{e.requirement} failed to build from source:\n{e.reason}",
                hint="pin a release with a wheel for this platform, or fix the build (e.g. "
                "extra_build_dependencies); the failure is remembered: the next call fails at "
                "once unless `flash check --refresh` or FLASH_RETRY_BUILDS=1",
            ) from None
        finally:
            tighten_lock_files(uv_cache, store.root)
        bytecode = {}
        if _lines(lock_text):
            site_packages = next((tmp / "lib").glob("python*/site-packages"))
            python = tmp / "bin" / "python"
            if not compile_later:
                _subprocess.report("compiling bytecode (linked from the store where it exists)")
            bytecode = link_bytecode(
                site_packages, python, store.bytecode, compile_missing=not compile_later
            )
        return {
            "bytecode": bytecode,
            "python": python_tag(),
            "platform": platform_tag(),
            "packages": len(_lines(lock_text)),
        }

    environment = Environment(key, store.build_once("envs", key, build))
    if compile_later:
        compile_pending(store, key)
    return environment


def summarize_uv_failure(stderr: str, tail: int = 12) -> str:
    """uv's own lines (``error:``, ``cause:``, ``hint:``) first, then the last lines of output.

    A failed build prints a long traceback from the package's build; what failed is in uv's
    lines at the top.
    """
    lines = stderr.splitlines()
    own = [line.strip() for line in lines if re.match(r"^\s*(error|cause|hint|help):", line)]
    rest = [
        line
        for line in lines[-tail:]
        if line.strip() and line.strip() not in own and not _PROGRESS.match(line)
    ]
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
        failed = failed_build(done.stderr, lock_text)
        if failed is not None:
            raise _BuildFailed(failed, summarize_uv_failure(done.stderr))
        raise EnvironmentBuildError(
            f"installing the environment's packages failed:\n{summarize_uv_failure(done.stderr)}",
            hint="check that every pinned package has a release for this platform (a wheel); "
            "nothing was kept from this attempt",
        )


class _BuildFailed(Exception):
    """uv could not build ``requirement`` from source; ``reason`` is uv's summary."""

    def __init__(self, requirement: str, reason: str) -> None:
        super().__init__(requirement)
        self.requirement, self.reason = requirement, reason
