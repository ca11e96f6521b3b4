"""Images for endpoints with a ``dockerImage``: the image checked, and derived with dependencies.

An image endpoint's workers run the image's own ``python3``. It must have the caller's Python
major.minor (``engine.python_rule``); that is checked once per image id. With
``dependencies=[...]`` or ``system_dependencies=[...]`` the workers run a derived image instead:

    FROM <the image's id>
    RUN apt-get update && apt-get install -y --no-install-recommends <system dependencies> ...
    RUN python3 -m venv --without-pip --system-site-packages /opt/flash/env
    COPY site-packages /opt/flash/env/lib/pythonX.Y/site-packages/

The site-packages are the endpoint's lock, installed here by uv (from its cache, offline first,
as environments are) for this Python and platform: no index, pip or uv is needed in the image,
and what the image already has stays importable behind the endpoint's pins. The derived image is
tagged ``localhost/openflash-derived:<key>``, the key a hash of (the image's id, the lock, the
system packages), and built once per key across processes.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from openflash import _subprocess
from openflash._version import __version__
from openflash.backends.engine import Engine, python_rule
from openflash.envs.store import Store, content_key
from openflash.envs.uv import uv_argv, uv_environ
from openflash.errors import EnvironmentBuildError, FlashError

__all__ = ["ImageFor", "derived_dockerfile", "prepare_image"]

ENV_PYTHON = "/opt/flash/env/bin/python"
_checked: dict[str, str | None] = {}


@dataclass(frozen=True)
class ImageFor:
    """What an image endpoint's workers run: an image, and the Python in it."""

    image: str
    python: str
    base_id: str


def derived_dockerfile(base: str, system: tuple[str, ...], *, source: str = "") -> str:
    """The Dockerfile of a derived image (the context holds ``site-packages/``)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    lines = [
        f"# {source or base} with an endpoint's dependencies, written by openflash {__version__}.",
        f"FROM {base}",
    ]
    if system:
        lines.append(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {' '.join(system)} && rm -rf /var/lib/apt/lists/*"
        )
    lines += [
        "RUN python3 -m venv --without-pip --system-site-packages /opt/flash/env",
        f"COPY site-packages /opt/flash/env/lib/python{version}/site-packages/",
    ]
    return "\n".join(lines) + "\n"


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
        raise FlashError(f"the engine has no image {image!r} after pulling it")
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
        return ImageFor(base_id, "python3", base_id)
    key = content_key("derived-image", base_id, lock_text, system, __version__)
    tag = f"localhost/openflash-derived:{key}"
    with store.lock("images", key):
        if engine.image_id(tag, pull=False) is None:
            _build(engine, tag, base_id, image, lock_text, system, uv_cache)
    return ImageFor(tag, ENV_PYTHON, base_id)


def _build(
    engine: Engine,
    tag: str,
    base_id: str,
    image: str,
    lock_text: str,
    system: tuple[str, ...],
    uv_cache: Path,
) -> None:
    _subprocess.report(f"deriving {image} with the endpoint's dependencies")
    with tempfile.TemporaryDirectory(prefix="openflash-image-") as tmp:
        context = Path(tmp)
        (context / "requirements.txt").write_text(lock_text)
        site = context / "site-packages"
        site.mkdir()

        def install(*args: str) -> _subprocess.Completed:
            return _subprocess.run(
                uv_argv(
                    "pip",
                    "install",
                    "--target",
                    str(site),
                    "--python",
                    sys.executable,
                    "--no-deps",
                    "--link-mode",
                    "copy",
                    "--requirement",
                    str(context / "requirements.txt"),
                    *args,
                    cache_dir=uv_cache,
                ),
                env=uv_environ(),
                timeout=3600,
                check=False,
                error=EnvironmentBuildError,
            )

        if any(line.strip() for line in lock_text.splitlines()):
            done = install("--offline")
            if not done.ok:
                done = install()
            if not done.ok:
                raise EnvironmentBuildError(
                    f"installing the dependencies for the image {image!r} failed:\n"
                    f"{_subprocess.tail(done.stderr, 12)}"
                )
        dockerfile = derived_dockerfile(base_id, system, source=image)
        (context / "Dockerfile").write_text(dockerfile)
        try:
            engine.build(context, tag)
        except FlashError as e:
            raise EnvironmentBuildError(
                f"building the image derived from {image!r} failed: {e.message}\n"
                f"The Dockerfile:\n{dockerfile}",
                hint="system_dependencies are installed with apt-get inside the image: it needs "
                "apt and a reachable Debian or Ubuntu mirror; or install them in the image "
                "itself",
            ) from None
