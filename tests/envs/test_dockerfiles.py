"""envs/dockerfiles.py: which base an endpoint's image starts from, and what a GPU image asks."""

from __future__ import annotations

import sys

from openflash.envs.dockerfiles import OFFLINE_APT, EndpointImage, endpoint_dockerfile, python_base


def test_the_base_is_the_debian_release_the_pins_were_made_on() -> None:
    assert python_base("3.11", "debian-12") == ("python:3.11-slim-bookworm", True)
    assert python_base("3.12", "debian-13") == ("python:3.12-slim-trixie", True)
    assert python_base("3.11", "debian-11") == ("python:3.11-slim-bullseye", True)
    # Locked elsewhere: a fixed release (never the moving -slim tag), installed by name.
    assert python_base("3.11", "ubuntu-22.04") == ("python:3.11-slim-bookworm", False)
    assert python_base("3.11", "unknown") == ("python:3.11-slim-bookworm", False)


def test_a_gpu_image_downloads_no_python_and_asks_for_the_nvidia_runtime() -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    text = endpoint_dockerfile(
        EndpointImage("gpu", f"python:{python}-slim-bookworm", gpu=True), wheelhouse=True
    )
    lines = text.splitlines()
    assert lines[2] == f"FROM python:{python}-slim-bookworm"
    assert "UV_PYTHON_DOWNLOADS=never" in text and "NVIDIA_VISIBLE_DEVICES=all" in text
    assert "apt-get" not in text  # no Python from apt either: the base has the lock's Python
    assert all("--offline --no-index" in line for line in lines if "uv pip" in line)
    cpu = endpoint_dockerfile(EndpointImage("cpu", f"python:{python}-slim-bookworm"))
    assert "NVIDIA" not in cpu and "--offline" not in cpu


def test_apt_installs_from_the_artifacts_debs_only_when_they_are_there() -> None:
    base = "python:3.11-slim-bookworm"
    pinned = (("tree", "2.1.0-1"),)
    staged = EndpointImage("t", base, pinned, ("tree",), debian_pins=True, debs=True)
    text = endpoint_dockerfile(staged, wheelhouse=True)
    assert "COPY debs/t /build/debs" in text and OFFLINE_APT in text
    assert "apt-get update" not in text  # no index: the network is off
    # Locked off Debian (pins dropped, no .debs staged): apt by name, from the index.
    by_name = EndpointImage("t", base, pinned, ("tree",), debian_pins=False)
    text = endpoint_dockerfile(by_name, wheelhouse=True)
    assert "apt-get update && apt-get install -y --no-install-recommends tree &&" in text
    assert "/build/debs" not in text
