"""Endpoints with a dockerImage: workers as podman containers of a locally built image.

No image registry is reachable here, so the images are built from Debian's packages with
mmdebstrap and imported into podman: one with python3 (and a marker file, to prove where a
function ran, and apt for system dependencies), one without. Skipped where podman or mmdebstrap is missing, except when
OPENFLASH_REQUIRE_PODMAN is set (CI installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from openflash.envs.dockerfiles import derived_dockerfile

from helpers import free_port, run_flash, run_python, write

IMAGE = "localhost/openflash-test:python3-apt"
BARE = "localhost/openflash-test:no-python"
MARKER = "built by the openflash tests"


def _missing() -> str | None:
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if subprocess.run(["podman", "info"], capture_output=True).returncode != 0:
        return "podman info fails"
    return None


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> None:
    reason = _missing()
    if reason:
        if os.environ.get("OPENFLASH_REQUIRE_PODMAN"):
            pytest.fail(f"podman is required here (OPENFLASH_REQUIRE_PODMAN): {reason}")
        pytest.skip(reason)
    for tag, options in ((IMAGE, ["--variant=apt", "--include=python3"]), (BARE, [])):
        if subprocess.run(["podman", "image", "exists", tag]).returncode == 0:
            continue
        tar = tmp_path_factory.mktemp("rootfs") / "rootfs.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=essential",
                *options,
                "--quiet",
                f"--customize-hook=echo '{MARKER}' > \"$1/etc/openflash-test\"",
                "bookworm",
                str(tar),
            ],
            check=True,
            timeout=600,
        )
        subprocess.run(["podman", "import", "--quiet", str(tar), tag], check=True, timeout=300)


def containers(endpoint: str) -> list[str]:
    done = subprocess.run(
        ["podman", "ps", "--all", "--filter", f"label=openflash.endpoint={endpoint}", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


PROGRAM = f'''
import asyncio
import json
import os
import signal
import sys

from runpod_flash import CpuServerlessEndpoint, remote

plain = CpuServerlessEndpoint(
    name="image-plain", dockerImage="{IMAGE}", env={{"GREETING": "hello"}}
)


@remote(plain)
def where() -> dict:
    return {{
        "marker": open("/etc/openflash-test").read().strip(),
        "release": open("/etc/os-release").read().splitlines()[0],
        "python": sys.executable,
        "greeting": os.environ.get("GREETING"),
        "cwd": os.getcwd(),
    }}


@remote(plain)
def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@remote(CpuServerlessEndpoint(name="image-local-square"))
def square(x: int) -> int:
    return x * x


@remote(plain)
async def calls_out(x: int) -> int:
    # A nested call from inside the container, over its stdin and stdout, to a local endpoint.
    return await square(x) + 1


@remote(
    CpuServerlessEndpoint(name="image-six", dockerImage="{IMAGE}"),
    dependencies=["six==1.16.0"],
    system_dependencies=["tree"],
)
def six_version() -> dict:
    import subprocess

    import six

    print("printed inside the container")
    tree = subprocess.run(["tree", "--version"], capture_output=True, text=True).stdout
    return {{"six": six.__version__, "prefix": sys.prefix, "tree": tree.split()[:2]}}


async def main() -> dict:
    seen = {{"where": await where(), "six": await six_version()}}
    try:
        await die()
    except Exception as e:
        seen["died"] = [type(e).__name__, getattr(e, "signal", None)]
    seen["after"] = (await where())["marker"]
    seen["nested"] = await calls_out(6)
    return seen


print(json.dumps(asyncio.run(main())))
'''


@pytest.mark.usefixtures("images", "flash_home")
def test_functions_run_in_the_image_with_their_dependencies(tmp_path: Path) -> None:
    script = write(tmp_path / "in_image.py", PROGRAM)
    done = run_python(script, timeout=600)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    # The function ran in the image: its marker file, its OS, its own python3, the endpoint's env.
    assert seen["where"] == {
        "marker": MARKER,
        "release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
        "python": "/usr/bin/python3",
        "greeting": "hello",
        "cwd": str(tmp_path),
    }
    # dependencies=[...] on an image: a derived image holding the lock, on the image's Python,
    # and system_dependencies=[...] installed in it with apt.
    assert seen["six"] == {"six": "1.16.0", "prefix": "/opt/flash/env", "tree": ["tree", "v2.1.0"]}
    assert "[image-six] printed inside the container" in done.stderr
    # A worker killed inside its container is reported like a crashed worker, and replaced.
    assert seen["died"] == ["WorkerCrashedError", 9]
    assert seen["after"] == MARKER
    assert seen["nested"] == 37
    # No container outlives the program.
    assert containers("image-plain") == [] and containers("image-six") == []
    derived = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    before = [d for d in derived if d.startswith("localhost/openflash-derived:")]
    assert before
    # The derived image is cached by (image, lock): a second run builds nothing.
    again = run_python(script, timeout=600)
    assert again.returncode == 0, again.stderr
    after = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(d for d in after if d.startswith("localhost/openflash-derived:")) == sorted(
        before
    )


ONE_CALL = """
import asyncio

from runpod_flash import CpuServerlessEndpoint, remote


@remote(CpuServerlessEndpoint(name="{name}", dockerImage="{image}"))
def f() -> int:
    return 1


asyncio.run(f())
"""


@pytest.mark.usefixtures("flash_home")
def test_no_engine_on_path_is_a_clear_error(tmp_path: Path) -> None:
    script = write(tmp_path / "no_engine.py", ONE_CALL.format(name="no-engine", image=IMAGE))
    empty = tmp_path / "bin"
    empty.mkdir()
    done = run_python(script, env={"PATH": str(empty), "FLASH_CONTAINER_ENGINE": ""})
    assert done.returncode == 1
    assert (
        f"endpoint 'no-engine' runs in the image '{IMAGE}', and no container engine was found: "
        "podman: not found; docker: not found"
    ) in done.stderr
    assert "Hint: install podman (apt-get install podman) or docker" in done.stderr
    assert "drop dockerImage/imageName" in done.stderr


@pytest.mark.usefixtures("images", "flash_home")
def test_an_image_without_python_is_a_clear_error(tmp_path: Path) -> None:
    script = write(tmp_path / "bare.py", ONE_CALL.format(name="bare", image=BARE))
    done = run_python(script, timeout=300)
    assert done.returncode == 1
    assert (
        f"endpoint 'bare' (image '{BARE}'): the image '{BARE}' has no python3 on its PATH"
    ) in done.stderr
    assert "Hint: use an image whose python3 is this Python's version" in done.stderr


@pytest.mark.usefixtures("images", "flash_home")
def test_an_image_that_cannot_be_pulled_quotes_the_engine(tmp_path: Path) -> None:
    image = "localhost/openflash-test:missing"
    script = write(tmp_path / "missing.py", ONE_CALL.format(name="missing", image=image))
    done = run_python(script, timeout=300)
    assert done.returncode == 1
    assert f"endpoint 'missing' (image '{image}'): `" in done.stderr
    assert "pull" in done.stderr and "failed with exit code" in done.stderr
    assert "Hint: check the image's name and that its registry is reachable" in done.stderr


BUILT = f'''
from runpod_flash import CpuServerlessEndpoint, remote


@remote(
    CpuServerlessEndpoint(name="built-image", dockerImage="{IMAGE}"),
    dependencies=["six==1.17.0"],
    system_dependencies=["tree"],
)
def inside() -> dict:
    import subprocess
    import sys

    import six

    tree = subprocess.run(["tree", "--version"], capture_output=True, text=True).stdout
    return {{
        "marker": open("/etc/openflash-test").read().strip(),
        "six": six.__version__,
        "prefix": sys.prefix,
        "tree": tree.split()[:2],
    }}
'''


@pytest.mark.usefixtures("images", "flash_home")
def test_flash_build_starts_from_the_image_with_the_lines_local_workers_use(
    tmp_path: Path,
) -> None:

    project = tmp_path / "built"
    write(project / "app.py", BUILT)
    built = run_flash("build", cwd=project, timeout=600)
    assert built.returncode == 0, built.stderr
    out = project / ".flash" / "build"
    text = (out / "dockerfiles" / "built-image").read_text()
    lock = (out / "locks" / "built-image.txt").read_text()
    # The lines local workers' derived image is built from, as they are, FROM the image (the
    # runtime's lock of the same set has no hashes, and names the same staged folder).
    assert "--hash=" in lock and derived_dockerfile(IMAGE, ("tree",), "six==1.17.0\n") in text
    assert text.splitlines()[2] == f"FROM {IMAGE}"
    assert run_flash("build", "--check", cwd=project).returncode == 0
    tag = "localhost/openflash-test-built:latest"
    subprocess.run(
        [
            "podman",
            "build",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--quiet",
            "--file",
            str(out / "dockerfiles" / "built-image"),
            "--tag",
            tag,
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    port = free_port()
    name = f"openflash-test-built-{port}"
    subprocess.run(
        [
            "podman",
            "run",
            "--detach",
            "--name",
            name,
            "--publish",
            f"127.0.0.1:{port}:8000",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--env",
            "FLASH_API_KEY=test-key",
            tag,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        answer = None
        for _ in range(120):
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/app/runsync",
                    json={"input": {}},
                    headers={"Authorization": "Bearer test-key"},
                    timeout=30,
                )
                break
            except httpx.TransportError:
                time.sleep(0.5)
        if answer is None or answer.status_code != 200:
            logs = subprocess.run(
                ["podman", "logs", name], capture_output=True, text=True, timeout=60
            )
            raise AssertionError(
                f"the image's server answered {answer and answer.text!r}; its output:\n"
                f"{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
            )
        # The same image, lock and system packages as the local workers ran with.
        assert answer.json()["output"] == {
            "marker": MARKER,
            "six": "1.17.0",
            "prefix": "/opt/flash/env",
            "tree": ["tree", "v2.1.0"],
        }
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, timeout=120)


VOLUME_PROGRAM = f'''
import asyncio
import json
import os

from runpod_flash import CpuServerlessEndpoint, NetworkVolume, remote

volume = NetworkVolume(name="image-shared")


@remote(CpuServerlessEndpoint(name="image-volume", dockerImage="{IMAGE}", networkVolume=volume))
def write_in_image(text: str) -> dict:
    folder = os.environ["FLASH_VOLUME_PATH"]
    with open(os.path.join(folder, "from-image.txt"), "w") as f:
        f.write(text)
    return {{
        "folder": folder,
        "seeded": open("/runpod-volume/seeded.txt").read(),
        "marker": open("/etc/openflash-test").read().strip(),
    }}


@remote(CpuServerlessEndpoint(name="local-volume", networkVolume=volume))
def read_locally() -> str:
    with open(os.path.join(os.environ["FLASH_VOLUME_PATH"], "from-image.txt")) as f:
        return f.read()


async def main() -> dict:
    return {{"image": await write_in_image("written in the container"), "local": await read_locally()}}


print(json.dumps(asyncio.run(main())))
'''


@pytest.mark.usefixtures("images")
def test_a_container_worker_sees_its_volume_at_runpod_volume(
    tmp_path: Path, flash_home: Path
) -> None:
    folder = flash_home / "volumes" / "image-shared"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seeded.txt").write_text("put there by the host")
    done = run_python(write(tmp_path / "volume.py", VOLUME_PROGRAM), timeout=600)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["image"] == {
        "folder": "/runpod-volume",
        "seeded": "put there by the host",
        "marker": MARKER,  # it ran in the image
    }
    assert (folder / "from-image.txt").read_text() == "written in the container"
    assert seen["local"] == "written in the container"  # a local endpoint shares the volume
    assert containers("image-volume") == []
