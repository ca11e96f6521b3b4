"""Images for endpoints with a ``dockerImage``: the image checked, and derived with dependencies.

An image endpoint's workers run the image's own ``python3``. It must have the caller's Python
major.minor (``engine.python_rule``); that is checked once per image id. With
``dependencies=[...]`` or ``system_dependencies=[...]`` the workers run a derived image instead
(its Dockerfile rendered by envs/dockerfiles.py):

    FROM <the image>
    RUN apt-get update && apt-get install -y --no-install-recommends <system dependencies> ...
    RUN python3 -m venv --without-pip --system-site-packages /opt/flash/env
    COPY deps/<lock key> /opt/flash/env/lib/pythonX.Y/site-packages/

``deps/<lock key>`` is the endpoint's lock, installed here by uv (from its cache, offline first,
as environments are) for this Python and platform: no index, pip or uv is needed in the image,
and what the image already has stays importable behind the endpoint's pins. ``flash build``
writes the same lines at the top of such an endpoint's Dockerfile, so that the images it
describes hold what local workers ran with. The derived image is tagged
``localhost/openflash-derived:<key>``, the key a hash of (the image's id, the lock, the system
packages), and built once per key across processes.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from openflash import _subprocess
from openflash._version import __version__
from openflash.envs.dockerfiles import deps_dir, derived_dockerfile, derived_image_dockerfile
from openflash.envs.engine import Engine, python_rule
from openflash.envs.environment import environment_key, summarize_uv_failure
from openflash.envs.store import Store, content_key
from openflash.envs.uv import run_pinned
from openflash.errors import EnvironmentBuildError, FlashError

__all__ = ["ImageFor", "install_into", "prepare_image", "stage_lock"]

ENV_PYTHON = "/opt/flash/env/bin/python"
_checked: dict[str, str | None] = {}


@dataclass(frozen=True)
class ImageFor:
    """What an image endpoint's workers run: an image, and the Python in it."""

    image: str
    python: str


def install_into(target: Path, sources: list[str], *, uv_cache: Path, no_deps: bool = True) -> None:
    """``uv pip install --target`` for this Python and platform: from uv's cache when it has
    everything (pins), else from the index."""
    target.mkdir(parents=True, exist_ok=True)

    done = run_pinned(
        "pip",
        "install",
        "--target",
        str(target),
        "--python",
        sys.executable,
        "--link-mode",
        "copy",
        *(["--no-deps"] if no_deps else []),
        *sources,
        cache_dir=uv_cache,
        timeout=3600,
    )
    if not done.ok:
        raise EnvironmentBuildError(
            f"installing {' '.join(sources)} failed:\n{summarize_uv_failure(done.stderr)}",
            hint="check that every pinned package has a wheel for this platform",
        )


def stage_lock(lock_text: str, target: Path, *, uv_cache: Path) -> None:
    """Install ``lock_text``'s packages into ``target`` (a site-packages folder)."""
    target.mkdir(parents=True, exist_ok=True)
    requirements = target.parent / f"{target.name}.requirements.txt"
    requirements.write_text(lock_text)
    if any(line.strip() for line in lock_text.splitlines()):
        install_into(target, ["--requirement", str(requirements)], uv_cache=uv_cache)


def prepare_image(
    store: Store,
    engine: Engine,
    image: str,
    lock_text: str,
    system: tuple[str, ...],
    *,
    uv_cache: Path,
) -> ImageFor:
    """Check ``image`` (pulling it if needed) and derive it with the dependencies, once."""
    base_id = engine.image_id(image)
    if base_id is None:
        raise FlashError(
            f"the engine has no image {image!r} after pulling it",
            hint=f"check with `{engine.kind} images` that the pull stored it, then call again",
        )
    if base_id not in _checked:
        _checked[base_id] = python_rule(image, engine.python_version(base_id))
    problem = _checked[base_id]
    if problem:
        raise FlashError(
            problem,
            hint="use an image whose python3 is this Python's version (e.g. FROM python:"
            f"{sys.version_info.major}.{sys.version_info.minor}-slim), or run this program "
            "with the image's Python version",
        )
    requirements = [line for line in lock_text.splitlines() if line.strip()]
    if not requirements and not system:
        return ImageFor(base_id, "python3")
    key = content_key("derived-image", base_id, environment_key(lock_text), system, __version__)
    tag = f"localhost/openflash-derived:{key}"
    with store.lock("images", key):
        if engine.image_id(tag, pull=False) is None:
            _build(engine, tag, image, lock_text, system, uv_cache)
    return ImageFor(tag, ENV_PYTHON)


def _build(
    engine: Engine,
    tag: str,
    image: str,
    lock_text: str,
    system: tuple[str, ...],
    uv_cache: Path,
) -> None:
    _subprocess.report(f"deriving {image} with the endpoint's dependencies")
    with tempfile.TemporaryDirectory(prefix="openflash-image-") as tmp:
        context = Path(tmp)
        try:
            stage_lock(lock_text, context / deps_dir(lock_text), uv_cache=uv_cache)
        except EnvironmentBuildError as e:
            e.message = f"deriving the image {image!r}: {e.message}"
            e.args = (e.message,)
            raise
        text = derived_dockerfile(image, system, lock_text)
        (context / "Dockerfile").write_text(derived_image_dockerfile(image, system, lock_text))
        try:
            engine.build(context, tag)
        except FlashError as e:
            raise EnvironmentBuildError(
                f"building the image derived from {image!r} failed: {e.message}\n"
                f"The Dockerfile:\n{text}",
                hint="system_dependencies are installed with apt-get inside the image: it needs "
                "apt and a reachable Debian or Ubuntu mirror; or install them in the image "
                "itself",
            ) from None
