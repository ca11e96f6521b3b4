"""`flash build --wheelhouse`: an image built with the network off, from the printed commands.

No image registry is reachable here, so ``python:3.11-slim-bookworm`` cannot be pulled. Its
closest stand-in is made here: Debian 12 (bookworm, the release the host locks apt packages on)
by mmdebstrap, with python3 and pip as the official image has them (pip may install into the
system Python: Debian's EXTERNALLY-MANAGED marker is removed, as the official image has none),
imported into podman, and given to ``podman build --from`` in place of the Dockerfile's FROM.
Skipped where podman or mmdebstrap is missing, except when OPENFLASH_REQUIRE_PODMAN is set.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from openflash.deps.system import distribution_release

from helpers import free_port, run_flash, write

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
STAND_IN = f"localhost/openflash-test:python{PYTHON}-slim-bookworm"
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="session")
def slim_bookworm(tmp_path_factory: pytest.TempPathFactory) -> str:
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            if os.environ.get("OPENFLASH_REQUIRE_PODMAN"):
                pytest.fail(f"podman is required here (OPENFLASH_REQUIRE_PODMAN): no {tool}")
            pytest.skip(f"{tool} is not installed")
    if sys.version_info[:2] != (3, 11) or distribution_release() != "debian-12":
        pytest.skip("the stand-in is Debian 12 and its Python 3.11: the release and Python here")
    if subprocess.run(["podman", "image", "exists", STAND_IN]).returncode == 0:
        return STAND_IN
    tar = tmp_path_factory.mktemp("slim") / "rootfs.tar"
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=apt",
            "--include=python3,python3-pip",
            "--quiet",
            '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            "bookworm",
            str(tar),
        ],
        check=True,
        timeout=600,
    )
    subprocess.run(["podman", "import", "--quiet", str(tar), STAND_IN], check=True, timeout=300)
    return STAND_IN


APP = """
    import subprocess
    from runpod_flash import CpuLiveServerless, LiveServerless, remote

    @remote(CpuLiveServerless(name="offline"), dependencies=["six==1.17.0"],
            system_dependencies=["tree"])
    def versions() -> dict:
        import six
        tree = subprocess.run(["tree", "--version"], capture_output=True, text=True).stdout
        return {"six": six.__version__, "tree": tree.split()[:2]}

    @remote(LiveServerless(name="on-gpu"), dependencies=["six==1.17.0"])
    def gpu_side() -> str:
        return "ok"
"""


def test_wheelhouse_images_build_with_the_network_off_from_the_printed_commands(
    tmp_path: Path, fresh_home: Path, uv_cache: Path, apt_dir: Path, slim_bookworm: str
) -> None:
    env = {
        "FLASH_HOME": str(fresh_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    project = tmp_path / "shop"
    write(project / "app.py", APP)
    assert run_flash("lock", cwd=project, env=env).returncode == 0
    lock = (project / "flash.lock").read_text()
    assert 'release = "debian-12"' in lock, lock
    online = run_flash("build", cwd=project, env=env)
    assert online.returncode == 0, online.stderr
    out = project / ".flash" / "build"
    for name in ("offline", "on-gpu"):
        text = (out / "dockerfiles" / name).read_text()
        # The Debian release the pins were made on, never the moving python:X.Y-slim tag.
        assert text.splitlines()[2] == f"FROM python:{PYTHON}-slim-bookworm", text
        assert "UV_PYTHON_DOWNLOADS=never" in text and "nvidia/cuda" not in text
    gpu_text = (out / "dockerfiles" / "on-gpu").read_text()
    assert "NVIDIA_VISIBLE_DEVICES=all" in gpu_text and "apt-get" not in gpu_text
    apt_line = next(
        line for line in (out / "dockerfiles" / "offline").read_text().splitlines() if "apt" in line
    )
    assert "apt-get update" in apt_line and "tree=2.1.0-1" in apt_line, apt_line
    assert "--wheelhouse" in online.stdout  # how to build it offline is said

    built = run_flash("build", "--wheelhouse", cwd=project, env=env)
    assert built.returncode == 0, built.stderr
    assert run_flash("build", "--check", cwd=project, env=env).returncode == 0
    debs = sorted(p.name for p in (out / "debs" / "offline").glob("*.deb"))
    assert any(d.startswith("tree_2.1.0-1_") for d in debs), debs
    (tree_deb,) = (out / "debs" / "offline").glob("tree_2.1.0-1_*.deb")
    moved = tree_deb.rename(tmp_path / tree_deb.name)  # a locked .deb missing: --check says so
    checked = run_flash("build", "--check", cwd=project, env=env)
    assert checked.returncode == 1 and f"debs/offline lacks {tree_deb.name}" in checked.stderr
    moved.rename(tree_deb)
    assert not (out / "debs" / "on-gpu").exists()  # it asks for no system package
    printed = [line.strip() for line in built.stdout.splitlines()]
    build_line = next(
        line for line in printed if line.startswith("podman build") and "offline" in line
    )
    assert "--network=none" in build_line, built.stdout
    run_line = next(line for line in printed if line.startswith("podman run"))
    tag = shlex.split(run_line)[-1]
    assert tag == "shop-offline" and "-p 8000:8000" in run_line
    assert any(line.startswith("curl") and "/app/versions/runsync" in line for line in printed)

    # The printed command as it is, from the project folder, with the stand-in for the base.
    argv = shlex.split(build_line)
    done = subprocess.run(
        [*argv[:2], "--from", slim_bookworm, *LIMITS, *argv[2:]],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    try:
        port = free_port()
        name = f"openflash-test-offline-{port}"
        subprocess.run(
            [
                "podman",
                "run",
                "--detach",
                "--name",
                name,
                "--publish",
                f"127.0.0.1:{port}:8000",
                *LIMITS,
                "--env",
                "FLASH_API_KEY=test-key",
                tag,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        answer = None
        for _ in range(240):
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/app/versions/runsync",
                    json={"input": {}},
                    headers={"Authorization": "Bearer test-key"},
                    timeout=60,
                )
                break
            except httpx.TransportError:
                time.sleep(0.5)
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=60)
        assert answer is not None and answer.status_code == 200, (
            f"{answer and answer.text!r}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
        )
        assert answer.json()["output"] == {"six": "1.17.0", "tree": ["tree", "v2.1.0"]}
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, timeout=120)
        subprocess.run(["podman", "rmi", "--force", tag], capture_output=True, timeout=120)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e["base"] for e in manifest["endpoints"]} == {f"python:{PYTHON}-slim-bookworm"}


def test_a_dockerfile_with_apt_pins_builds_on_the_release_they_were_locked_on(
    tmp_path: Path, fresh_home: Path, uv_cache: Path, apt_dir: Path, slim_bookworm: str
) -> None:
    """Without --wheelhouse, with the network (Debian's mirror, as a user's build has):
    ``apt-get install tree=<locked version>`` finds that version on the base's release.

    The Dockerfile is built up to its apt step: past it, pip reaches PyPI over HTTPS, which
    this machine's proxy answers with a certificate of its own that a container does not trust
    (the wheelhouse test above builds the whole file, with no network at all)."""
    env = {
        "FLASH_HOME": str(fresh_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    project = tmp_path / "pinned"
    write(project / "app.py", APP)
    assert run_flash("lock", cwd=project, env=env).returncode == 0
    built = run_flash("build", cwd=project, env=env)
    assert built.returncode == 0, built.stderr
    written = (project / ".flash" / "build" / "dockerfiles" / "offline").read_text().splitlines()
    apt_step = next(i for i, line in enumerate(written) if "apt-get install" in line)
    assert "tree=2.1.0-1" in written[apt_step], written[apt_step]
    dockerfile = tmp_path / "up-to-apt.Dockerfile"
    dockerfile.write_text("\n".join(written[: apt_step + 1]) + "\n")
    tag = "localhost/openflash-test-pinned:latest"
    try:
        done = subprocess.run(
            [
                "podman",
                "build",
                "--from",
                slim_bookworm,
                *LIMITS,
                "-f",
                str(dockerfile),
                "-t",
                tag,
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        tree = subprocess.run(
            ["podman", "run", "--rm", *LIMITS, tag, "tree", "--version"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert tree.stdout.split()[:2] == ["tree", "v2.1.0"], tree.stdout + tree.stderr
    finally:
        subprocess.run(["podman", "rmi", "--force", tag], capture_output=True, timeout=120)
