"""The top-level modules of a resolved set before its environment is built (``flash check``).

Each locked release's modules are read from its wheel's ``RECORD`` (and ``top_level.txt``):
first where uv has already unpacked it (uv's cache: ``archive-v0/<id>/<name>-<version>
.dist-info/``), else from the wheel fetched with uv into a scratch folder (``uv pip install
--no-deps --only-binary :all: --target``; the wheel stays in uv's cache for the build). The
torch family and the ``nvidia-*`` packages are never fetched (gigabytes), nor packages with no
wheel here. What was read neither way is returned as unverified: its modules are derived from
its name only (deps/imports.py), and ``flash check`` says so rather than call a module undeclared.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from packaging.utils import canonicalize_name

from openflash import _subprocess
from openflash.deps.imports import modules_provided, record_modules
from openflash.deps.torch_variants import TORCH_FAMILY
from openflash.envs.uv import uv_argv, uv_environ
from openflash.envs.uv_options import NO_OPTIONS, UvOptions

__all__ = ["cached_modules", "set_modules", "wheel_modules"]


def cached_modules(packages: dict[str, str], uv_cache: Path) -> dict[str, set[str]]:
    """Canonical name to top-level modules, for each of ``packages`` (name to its pin,
    ``==1.2.3``) whose wheel uv's cache holds unpacked."""
    wanted = {_release(name, pin) for name, pin in packages.items()}
    found: dict[str, set[str]] = {}
    for info in uv_cache.glob("archive-v*/*/*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        key = (canonicalize_name(name), version)
        if key in wanted and key[0] not in found:
            found[key[0]] = _info_modules(info)
    return found


def wheel_modules(
    packages: dict[str, str],
    *,
    uv_cache: Path,
    options: UvOptions = NO_OPTIONS,
    skip: Iterable[str] = (),
) -> dict[str, set[str]]:
    """As ``cached_modules``, from the wheels of ``packages`` fetched with uv (one call, no
    dependencies, into a scratch folder), less ``skip`` (canonical names), the torch family and
    ``nvidia-*``. Empty where uv fails (a package with no wheel, an index unreachable)."""
    skipped = {canonicalize_name(s) for s in skip} | set(TORCH_FAMILY)
    pins = [
        f"{name}{pin}"
        for name, pin in sorted(packages.items())
        if pin.startswith("==")
        and canonicalize_name(name) not in skipped
        and not canonicalize_name(name).startswith("nvidia-")
    ]
    if not pins:
        return {}
    with tempfile.TemporaryDirectory(prefix="openflash-modules-") as scratch:
        target = Path(scratch, "target")
        requirements = Path(scratch, "requirements.txt")
        requirements.write_text("\n".join(pins) + "\n")
        with options.arguments() as args:
            argv = uv_argv(
                "pip", "install", "--no-deps", "--only-binary", ":all:", "--python",
                sys.executable, "--target", str(target), "--quiet", "-r", str(requirements),
                *args, cache_dir=uv_cache,
            )  # fmt: skip
            env = {**uv_environ(), **options.environ()}
            done = _subprocess.run(argv, env=env, timeout=300, check=False)
        if not done.ok:
            return {}
        return {
            canonicalize_name(info.name.removesuffix(".dist-info").rpartition("-")[0]): (
                _info_modules(info)
            )
            for info in target.glob("*.dist-info")
        }


def _release(name: str, pin: str) -> tuple[str, str]:
    return canonicalize_name(name), pin.removeprefix("==").strip()


def _info_modules(info: Path) -> set[str]:
    """The modules a ``.dist-info`` folder's RECORD and ``top_level.txt`` list."""
    found = record_modules(info / "RECORD")
    with contextlib.suppress(OSError):
        found |= {line.strip() for line in (info / "top_level.txt").read_text().splitlines()}
    return {m for m in found if m}


def set_modules(
    packages: dict[str, str],
    site_packages: Path | None,
    *,
    uv_cache: Path,
    options: UvOptions = NO_OPTIONS,
    skip: Iterable[str] = (),
    wanted: Iterable[str] | None = None,
) -> tuple[frozenset[str], tuple[str, ...]]:
    """The modules a locked set provides and the packages (canonical) whose modules were not
    read: from the installed set (``site_packages``) where it is built, else from uv's cache,
    else from the wheels fetched (``wheel_modules``; ``skip``: not those). Given ``wanted``
    (the modules the code imports), wheels are fetched only if one of those (not the standard
    library's) is provided by nothing known yet."""
    provided = modules_provided(packages, site_packages)
    if site_packages is not None and site_packages.is_dir():
        return provided, ()
    known = cached_modules(packages, uv_cache)
    rest = {n: p for n, p in packages.items() if canonicalize_name(n) not in known}
    so_far = provided.union(*known.values(), sys.stdlib_module_names)
    if wanted is None or {m.split(".")[0] for m in wanted} - so_far:
        known |= wheel_modules(rest, uv_cache=uv_cache, options=options, skip=skip)
    read = frozenset().union(*known.values())
    unverified = sorted({canonicalize_name(n) for n in packages} - set(known))
    return provided | read, tuple(unverified)
