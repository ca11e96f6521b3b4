"""Every Dockerfile openflash writes, rendered here from plain values.

- ``derived_dockerfile``: the lines that derive an image endpoint's ``dockerImage`` with its lock
  (staged by uv in ``deps_dir(lock)``) and apt packages; ``derived_image_dockerfile`` is the
  whole file the engine builds for local workers (envs/images.py).
- ``image_endpoint_dockerfile``: ``flash build``'s Dockerfile of such an endpoint: the derived
  lines, then openflash (staged in ``OPENFLASH_DEPS``) serving the endpoint.
- ``endpoint_dockerfile``: ``flash build``'s Dockerfile of any other endpoint (``EndpointImage``):
  the official Python image of the Debian release its apt pins were locked on
  (``python_base``), apt packages, the lock synced with uv, the server. GPU endpoints start from
  the same base: the CUDA libraries torch and its kin need come from their wheels (the
  ``nvidia-*`` packages in the lock) and the driver from the NVIDIA container runtime, so no
  CUDA base, whose Python differs from the lock's, and no Python download.
- ``check_dockerfile``: what a written Dockerfile installs beyond its lock (``flash build
  --check``).

The text is exact: images are keyed and compared by it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import metadata

from openflash._version import __version__
from openflash.envs.environment import environment_key

__all__ = [
    "DEBIAN_CODENAMES",
    "OFFLINE_APT",
    "OPENFLASH_DEPS",
    "PORT",
    "EndpointImage",
    "check_dockerfile",
    "deps_dir",
    "derived_dockerfile",
    "derived_image_dockerfile",
    "endpoint_dockerfile",
    "image_endpoint_dockerfile",
    "python_base",
    "uv_version",
]

#: The Debian releases the official Python images are built on, by ``VERSION_ID``.
DEBIAN_CODENAMES = {"11": "bullseye", "12": "bookworm", "13": "trixie"}
#: The release of the base when the lock was not made on a Debian the images know.
_DEFAULT_DEBIAN = "12"
#: The port an endpoint's server listens on in its image.
PORT = 8000
#: Where openflash and its dependencies are staged in a build context, for image endpoints.
OPENFLASH_DEPS = "deps/openflash"


def _python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def python_base(python: str, release: str) -> tuple[str, bool]:
    """The image an endpoint starts from for ``python`` (``3.11``) when its apt packages were
    locked on ``release`` (``debian-12``, as deps/system.py names it), and whether their pinned
    versions hold there: ``python:3.11-slim-bookworm`` for Debian 12, never the bare
    ``-slim`` tag, which moves to each new Debian release."""
    ident, _, version = release.partition("-")
    known = ident == "debian" and version in DEBIAN_CODENAMES
    codename = DEBIAN_CODENAMES[version if known else _DEFAULT_DEBIAN]
    return f"python:{python}-slim-{codename}", known


def uv_version() -> str:
    """The version of uv installed here, which images install too."""
    return metadata.version("uv")


def deps_dir(lock_text: str) -> str:
    """Where a lock's packages sit in a build context: named by its environment key (the pins,
    hashes or not, for this Python and platform), as local and ``flash build`` locks agree."""
    return f"deps/{environment_key(lock_text)[:16]}"


def derived_dockerfile(image: str, system: tuple[str, ...], lock_text: str) -> str:
    """The lines that derive ``image`` with a lock (staged at ``deps_dir``) and apt packages."""
    lines = [f"FROM {image}"]
    if system:
        lines.append(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {' '.join(system)} && rm -rf /var/lib/apt/lists/*"
        )
    lines += [
        "RUN python3 -m venv --without-pip --system-site-packages /opt/flash/env",
        f"COPY {deps_dir(lock_text)} /opt/flash/env/lib/python{_python()}/site-packages/",
    ]
    return "\n".join(lines) + "\n"


def derived_image_dockerfile(image: str, system: tuple[str, ...], lock_text: str) -> str:
    """The Dockerfile of the image local workers of an image endpoint run: a comment, then
    ``derived_dockerfile``."""
    return (
        f"# {image} with an endpoint's dependencies, written by openflash {__version__}.\n"
        + derived_dockerfile(image, system, lock_text)
    )


def image_endpoint_dockerfile(
    name: str, image: str, system: tuple[str, ...], lock_text: str, port: int = PORT
) -> str:
    """``flash build``'s Dockerfile of endpoint ``name`` with a ``dockerImage``: the lines its
    local workers' image is derived with, then its server on the image's python3."""
    head = [
        f"# Endpoint {name!r}, written by `flash build` (openflash {__version__}).",
        f"# It runs in the image {image} with exactly locks/{name}.txt (staged in "
        f"{deps_dir(lock_text)}) and the system packages below.",
    ]
    tail = [
        "RUN python3 -m venv --without-pip /opt/openflash",
        f"COPY {OPENFLASH_DEPS} /opt/openflash/lib/python{_python()}/site-packages/",
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


@dataclass(frozen=True, slots=True)
class EndpointImage:
    """What ``flash build``'s image of one endpoint holds.

    ``base`` is the image it starts from; ``system_packages`` the locked apt closure as
    (name, version) pairs, installed by name alone when ``debian_pins`` is false (the base is not
    the distribution they were locked on); ``system_dependencies`` the names asked for, installed
    as they are when nothing was locked. ``gpu``: the NVIDIA container runtime is asked to give
    the container the GPUs and the driver.
    """

    name: str
    base: str
    system_packages: tuple[tuple[str, str], ...] = ()
    system_dependencies: tuple[str, ...] = ()
    debian_pins: bool = False
    gpu: bool = False
    #: With a wheelhouse: the .debs are in the artifact (debs/<name>), installed without an index.
    debs: bool = False


#: A wheelhouse build's apt step: the artifact's .debs (the whole closure, from nothing) that the
#: base does not have yet, installed without an index, so with the network off.
OFFLINE_APT = (
    "RUN cd /build/debs && apt-get install -y --no-install-recommends "
    '$(for deb in *.deb; do dpkg -s "$(dpkg-deb -f "$deb" Package)" >/dev/null 2>&1 '
    '|| echo "./$deb"; done) && rm -rf /build/debs'
)


def endpoint_dockerfile(image: EndpointImage, *, wheelhouse: bool = False) -> str:
    """The Dockerfile of one endpoint: base, apt packages, its lock, the code, the server.
    With ``wheelhouse`` everything installs offline from the artifact's wheelhouse/ and debs/."""
    name = image.name
    python = _python()
    offline = " --offline --no-index --find-links /build/wheelhouse" if wheelhouse else ""
    lines = [
        f"# Endpoint {name!r}, written by `flash build` (openflash {__version__}).",
        "# It installs exactly locks/" + f"{name}.txt and the system packages below.",
        f"FROM {image.base}",
        "ENV PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive FLASH_HOME=/opt/flash "
        "UV_PYTHON_DOWNLOADS=never",
    ]
    if image.gpu:
        lines += [
            "# GPUs: CUDA comes from the lock's wheels (torch's nvidia-* packages), the driver "
            "from the NVIDIA container runtime (run with --gpus all or a CDI device).",
            "ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility",
        ]
    apt_packages = [
        package + (f"={version}" if image.debian_pins else "")
        for package, version in image.system_packages
    ]
    if image.system_dependencies and not apt_packages:
        apt_packages = list(image.system_dependencies)
    if apt_packages and wheelhouse and image.debs:
        lines += [f"COPY debs/{name} /build/debs", OFFLINE_APT]
    elif apt_packages:
        lines.append(
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            + " ".join(apt_packages)
            + " && rm -rf /var/lib/apt/lists/*"
        )
    if wheelhouse:
        lines.append("COPY wheelhouse /build/wheelhouse")
    pip_offline = " --no-index --find-links /build/wheelhouse" if wheelhouse else ""
    lines += [
        f"RUN python3 -m pip install --no-cache-dir{pip_offline} uv=={uv_version()}",
        "COPY openflash /build/openflash",
        f"RUN uv venv --python {python} /opt/openflash && uv pip install --python "
        f"/opt/openflash/bin/python{offline} /build/openflash",
        f"COPY locks/{name}.txt /build/requirements.txt",
        f"RUN uv venv --python {python} /opt/flash/env && uv pip sync --python "
        f"/opt/flash/env/bin/python --compile-bytecode --allow-empty-requirements{offline} "
        "/build/requirements.txt",
        "COPY app /app",
        "WORKDIR /app",
        f'ENV FLASH_PREBUILT_ENV=/opt/flash/env FLASH_SYSTEM_DEPS=none FLASH_ENDPOINTS="{name}"',
        f"EXPOSE {PORT}",
        "# Set FLASH_API_KEY when running it: the server listens beyond loopback.",
        f'CMD ["/opt/openflash/bin/flash", "run", "/app", "--host", "0.0.0.0", "--port", "{PORT}", '
        '"--no-reload"]',
    ]
    return "\n".join(lines) + "\n"


def check_dockerfile(
    text: str, lock_text: str, *, locked_text: str, apt_allowed: frozenset[str]
) -> list[str]:
    """What the Dockerfile ``text`` installs beyond its lock, one sentence per problem.

    ``lock_text`` is the lock file the build wrote beside it, ``locked_text`` the lock it must
    equal (flash.lock's, as ``LockEntry.lock_text``), ``apt_allowed`` the apt package names it
    may install (the locked closure and the names asked for).
    """
    problems = []
    allowed = apt_allowed
    for line in text.splitlines():
        if not line.startswith("RUN ") or line == OFFLINE_APT:  # the artifact's own .debs
            continue
        for command in re.split(r"&&|;", line[4:]):
            words = command.split()
            if words[:2] == ["apt-get", "install"]:
                for package in (w for w in words[2:] if not w.startswith("-")):
                    if package.split("=")[0].split(":")[0] not in allowed:
                        problems.append(f"apt-get installs {package}, which is not locked")
            elif "pip" in words and "install" in words:
                index = words.index("install")
                for package in (w for w in words[index + 1 :] if not w.startswith("-")):
                    if not (
                        package.startswith(("uv==", "/opt/", "/build/wheelhouse"))
                        or package == "/build/openflash"
                    ):
                        problems.append(f"pip installs {package}, which is not in the lock")
            elif "sync" in words and words[-1] != "/build/requirements.txt":
                problems.append(f"uv pip sync installs {words[-1]} instead of the lock")
    copied = [line.split()[1] for line in text.splitlines() if line.startswith("COPY locks/")]
    staged = [line.split()[1] for line in text.splitlines() if line.startswith("COPY deps/")]
    if staged:  # an image endpoint's: its lock comes staged in deps/<lock key>
        if [s for s in staged if s != OPENFLASH_DEPS] != [deps_dir(lock_text)]:
            problems.append(f"the Dockerfile must copy exactly {deps_dir(lock_text)} (its lock)")
    elif len(copied) != 1:
        problems.append("the Dockerfile must copy exactly one lock")
    if lock_text != locked_text:
        problems.append("its lock file differs from flash.lock")
    return problems
