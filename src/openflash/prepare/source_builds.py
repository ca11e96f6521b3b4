"""The warning before a build: which locked packages uv will build from source (what ``flash
check`` warns of), said before the build starts, since a source build can take minutes with
nothing printed; not for a set whose build failed before (it fails at once:
envs/build_failures.py)."""

from __future__ import annotations

import logging

from packaging.utils import canonicalize_name

from openflash import _subprocess
from openflash._settings import Settings
from openflash.deps.resolve import without_wheels
from openflash.envs.build_failures import recall
from openflash.envs.environment import platform_tag, python_tag
from openflash.envs.store import Store
from openflash.envs.uv_options import UvOptions
from openflash.prepare.dependency_checks import no_wheel_text

__all__ = ["warn_source_builds"]

logger = logging.getLogger("openflash")


def warn_source_builds(
    store: Store, settings: Settings, lock_text: str, options: UvOptions
) -> None:
    """Warn (the progress channel, the openflash logger) of each package of ``lock_text`` that
    has no wheel here, unless its build is remembered as failed and FLASH_RETRY_BUILDS is off."""
    here = (python_tag(), platform_tag())
    if not settings.retry_builds and recall(store, lock_text, options=options, platform=here):
        return
    pins: dict[str, str] = {
        canonicalize_name(line.split("==")[0].strip()): line for line in lock_text.splitlines()
    }
    for name in without_wheels(lock_text, uv_cache=settings.uv_cache_dir, options=options):
        text = no_wheel_text(pins.get(name, name))
        _subprocess.report(f"warning: {text}")  # announced by the displays (build_progress)
        logger.info("openflash: %s", text)
