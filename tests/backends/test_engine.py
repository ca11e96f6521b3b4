"""The container engine's command lines and rules, without an engine (GPUs cannot exist here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from openflash.backends.containers import container_argv
from openflash.backends.targets import ContainerTarget
from openflash.envs.dockerfiles import derived_dockerfile
from openflash.envs.engine import Engine, parse_version, python_rule
from openflash.workers.port import WorkerSpec


def spec(**fields: object) -> WorkerSpec:
    base: dict[str, object] = {
        "endpoint": "gpu endpoint",
        "target": ContainerTarget("localhost/img:1", "python3", Path("/store/runtime/abc")),
        "cwd": Path("/work/project"),
        "project": Path("/work/project"),
        "env": {"API_TOKEN": "s3cret"},
    }
    return WorkerSpec(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("podman", ["--device=nvidia.com/gpu=0", "--device=nvidia.com/gpu=2"]),
        ("docker", ["--gpus", "device=0,2"]),
    ],
)
def test_gpus_limits_mounts_and_env_reach_the_run_command(kind: str, expected: list[str]) -> None:
    engine = Engine(f"/usr/bin/{kind}", kind)
    argv, environ = container_argv(
        engine, spec(vcpus=2, memory_gib=4, max_concurrency=3), "openflash-x", ("0", "2")
    )
    text = " ".join(argv)
    assert " ".join(expected) in text
    assert "--cpus=2" in argv and "--memory=4g" in argv
    # The runtime and the project, read-only at the paths the caller knows.
    assert "--volume=/store/runtime/abc:/store/runtime/abc:ro" in argv
    assert "--volume=/work/project:/work/project:ro" in argv
    assert "--workdir=/work/project" in argv
    # Values travel in the engine's environment, never in its argv.
    assert "--env=API_TOKEN" in argv and "s3cret" not in text
    assert environ["API_TOKEN"] == "s3cret"
    assert environ["PYTHONPATH"] == "/store/runtime/abc:/work/project"
    assert argv[-7:] == [
        "--entrypoint",
        "python3",
        "localhost/img:1",
        "-m",
        "openflash.workers.child",
        "stdio",
        "3",
    ]
    assert ("--ulimit" in argv) == (kind == "podman")


def test_a_cwd_outside_the_project_is_mounted_too() -> None:
    argv, _ = container_argv(
        Engine("/usr/bin/podman", "podman"), spec(cwd=Path("/elsewhere")), "n", ()
    )
    assert "--volume=/elsewhere:/elsewhere:ro" in argv and "--workdir=/elsewhere" in argv


def test_the_python_rule_is_the_same_major_minor() -> None:
    here = sys.version_info[:2]
    assert python_rule("img", here) is None
    assert python_rule("img", None) == "the image 'img' has no python3 on its PATH"
    other = (here[0], here[1] - 1)
    problem = python_rule("img", other)
    assert problem is not None
    assert f"has Python {other[0]}.{other[1]}" in problem and "same major.minor" in problem
    assert parse_version("3.11\n") == (3, 11)
    assert parse_version("") is None and parse_version("garbage") is None


def test_the_derived_dockerfile_installs_exactly_the_lock_and_the_system_packages() -> None:
    from openflash.envs.dockerfiles import deps_dir

    lock = "six==1.17.0 --hash=sha256:abc\n"
    text = derived_dockerfile("my/img:1", ("ffmpeg", "libgl1"), lock)
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert deps_dir(lock).startswith("deps/") and deps_dir(lock) != deps_dir("six==1.16.0\n")
    assert text.splitlines() == [
        "FROM my/img:1",
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
        "--no-install-recommends ffmpeg libgl1 && rm -rf /var/lib/apt/lists/*",
        "RUN python3 -m venv --without-pip --system-site-packages /opt/flash/env",
        f"COPY {deps_dir(lock)} /opt/flash/env/lib/python{minor}/site-packages/",
    ]
    assert "apt-get" not in derived_dockerfile("img", (), lock)
