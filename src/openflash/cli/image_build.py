"""``flash build`` for endpoints with a ``dockerImage``: their Dockerfile and what it copies.

The Dockerfile starts with exactly the lines openflash derives the image with for local workers
(envs/images.py: FROM the image, apt packages, a venv seeing the image's packages, the lock
staged by uv in ``deps/<lock key>``), so that the built image holds what local workers ran with.
The server (``flash run`` on the endpoint) runs on the image's python3 too, from openflash and its
dependencies staged in ``deps/openflash``: the image needs neither pip nor an index.
"""

from __future__ import annotations

import sys
from pathlib import Path

import openflash
from openflash.envs.images import deps_dir, derived_dockerfile, install_into, stage_lock

__all__ = ["OPENFLASH_DEPS", "image_dockerfile", "stage_image_endpoint", "stage_openflash"]

OPENFLASH_DEPS = "deps/openflash"


def image_dockerfile(
    name: str, image: str, system: tuple[str, ...], lock_text: str, port: int
) -> str:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    head = [
        f"# Endpoint {name!r}, written by `flash build` (openflash {openflash.__version__}).",
        f"# It runs in the image {image} with exactly locks/{name}.txt (staged in "
        f"{deps_dir(lock_text)}) and the system packages below.",
    ]
    tail = [
        "RUN python3 -m venv --without-pip /opt/openflash",
        f"COPY {OPENFLASH_DEPS} /opt/openflash/lib/python{version}/site-packages/",
        "COPY app /app",
        "WORKDIR /app",
        "ENV PYTHONUNBUFFERED=1 FLASH_HOME=/opt/flash FLASH_PREBUILT_ENV=/opt/flash/env "
        f'FLASH_SYSTEM_DEPS=none FLASH_ENDPOINTS="{name}"',
        f"EXPOSE {port}",
        "# Set FLASH_API_KEY when running it: the server listens beyond loopback.",
        'CMD ["/opt/openflash/bin/python", "-m", "openflash.cli.main", "run", "/app", "--host", '
        f'"0.0.0.0", "--port", "{port}", "--no-reload"]',
    ]
    return (
        "\n".join(head)
        + "\n"
        + derived_dockerfile(image, system, lock_text)
        + "\n".join(tail)
        + "\n"
    )


def stage_image_endpoint(out: Path, lock_text: str, uv_cache: Path) -> None:
    target = out / deps_dir(lock_text)
    if not target.exists():
        stage_lock(lock_text, target, uv_cache=uv_cache)


def stage_openflash(out: Path, uv_cache: Path) -> None:
    """openflash (copied to ``out/openflash``) and its dependencies, for the image's python3."""
    install_into(out / OPENFLASH_DEPS, [str(out / "openflash")], uv_cache=uv_cache, no_deps=False)
