"""``flash build`` for endpoints with a ``dockerImage``: what their Dockerfile copies.

Their Dockerfile (envs/dockerfiles.py ``image_endpoint_dockerfile``) starts with exactly the
lines openflash derives the image with for local workers (FROM the image, apt packages, a venv
seeing the image's packages, the lock staged by uv in ``deps/<lock key>``), so that the built
image holds what local workers ran with. The server (``flash run`` on the endpoint) runs on the
image's python3 too, from openflash and its dependencies staged in ``deps/openflash``: the image
needs neither pip nor an index. This module stages both into the artifact.
"""

from __future__ import annotations

from pathlib import Path

from openflash.envs.dockerfiles import OPENFLASH_DEPS, deps_dir
from openflash.envs.images import install_into, stage_lock

__all__ = ["stage_image_endpoint", "stage_openflash"]


def stage_image_endpoint(out: Path, lock_text: str, uv_cache: Path) -> None:
    target = out / deps_dir(lock_text)
    if not target.exists():
        stage_lock(lock_text, target, uv_cache=uv_cache)


def stage_openflash(out: Path, uv_cache: Path) -> None:
    """openflash (copied to ``out/openflash``) and its dependencies, for the image's python3."""
    install_into(out / OPENFLASH_DEPS, [str(out / "openflash")], uv_cache=uv_cache, no_deps=False)
