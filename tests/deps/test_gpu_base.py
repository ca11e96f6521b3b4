"""The GPU base set: a GPU endpoint whose code imports one of the packages of Runpod's GPU image
without declaring it gets it; a declared version wins; a CPU endpoint never gets it; the lock and
`flash check` say where it came from. Real uv, real workers.

Runpod's set (torch, torchvision, torchaudio, numpy, triton) is gigabytes from the index, so
these tests replace it through FLASH_GPU_BASE_PACKAGES with a stand-in: ``acme-torch``, two small
wheels served by a loopback index (tests/index_server.py). There is no GPU here: the GPU
endpoints run on the CPU after their warning, as they do on any machine without one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from index_server import serve_index
from openflash._settings import Settings
from openflash.deps.gpu_base import GPU_BASE_PACKAGES, base_set, from_base
from openflash.errors import ConfigError
from openflash.prepare import Preparer

from helpers import make_wheel, run_flash, run_python, write

STAND_IN = "acme-torch==2.0"

APP = """
import asyncio
from openflash import CpuLiveServerless, Endpoint, GpuGroup, LiveServerless, remote


@Endpoint(name="gpu_undeclared", gpu=GpuGroup.ANY)
def gpu_undeclared() -> str:
    import acme_torch
    return acme_torch.VERSION


@Endpoint(name="gpu_declared", gpu=GpuGroup.ANY, dependencies=["acme-torch==1.0"])
def gpu_declared() -> str:
    import acme_torch
    return acme_torch.VERSION


@remote(LiveServerless(name="gpu_plain", gpus=[GpuGroup.ANY]))
def gpu_plain() -> bool:
    import importlib.util
    return importlib.util.find_spec("acme_torch") is None


@remote(CpuLiveServerless(name="cpu_undeclared"))
def cpu_undeclared() -> str:
    import acme_torch
    return acme_torch.VERSION


async def main() -> None:
    print("gpu undeclared:", await gpu_undeclared())
    print("gpu declared:", await gpu_declared())
    print("gpu not importing it, lacks it:", await gpu_plain())
    try:
        await cpu_undeclared()
    except Exception as e:
        print("cpu undeclared:", type(e).__name__, str(e).splitlines()[0])


if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.fixture
def stand_in_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback index of acme-torch 1.0 and 2.0, the only index uv asks; the stand-in base
    set names 2.0."""
    for version in ("1.0", "2.0"):
        source = f"VERSION = {version!r}\n"
        make_wheel(tmp_path / "index", "acme_torch", version, {"acme_torch.py": source})
    with serve_index(tmp_path / "index") as (url, _):
        monkeypatch.setenv("UV_INDEX_URL", url)
        monkeypatch.setenv("FLASH_GPU_BASE_PACKAGES", STAND_IN)
        yield url


def test_the_base_set_follows_runpods_gpu_image_and_the_setting_replaces_it() -> None:
    image = ("torch", "torchvision", "torchaudio", "numpy", "triton")
    assert base_set(None) == GPU_BASE_PACKAGES == image
    assert base_set("") == ()
    assert base_set(" six==1.16.0, numpy ") == ("six==1.16.0", "numpy")
    with pytest.raises(ConfigError, match="FLASH_GPU_BASE_PACKAGES: 'torch==' is not"):
        base_set("torch==")


def test_only_imported_undeclared_members_are_added() -> None:
    base = GPU_BASE_PACKAGES
    assert from_base((), ("os", "json"), base) == ()
    assert from_base(("torch==2.5.1",), ("torch", "numpy"), base) == ("numpy",)
    assert from_base(("Torch>=2", "numpy"), ("torch",), base) == ()  # names compare canonically
    assert from_base(("pandas",), ("pandas",), base) == ()
    assert from_base((), ("triton",), base) == ("triton",)


def test_torch_from_the_base_set_brings_the_images_numpy() -> None:
    """A GPU worker importing only torch (a matrix product, then ``.numpy()`` or a list) has
    numpy beside it, as on Runpod's image; a declared numpy wins, a declared torch brings
    nothing, a stand-in set without numpy adds none."""
    base = GPU_BASE_PACKAGES
    assert from_base((), ("torch", "os", "json"), base) == ("torch", "numpy")
    assert from_base((), ("torchvision", "torch"), base) == ("torch", "torchvision", "numpy")
    assert from_base(("numpy==2.1.3",), ("torchaudio",), base) == ("torchaudio",)
    assert from_base(("torch==2.5.1",), ("torch",), base) == ()  # its own set: nothing added
    assert from_base((), ("torch",), ("torch==2.5.1",)) == ("torch==2.5.1",)


def test_a_gpu_endpoint_gets_an_undeclared_import_declared_wins_cpu_never(
    tmp_path: Path, fresh_home: Path, stand_in_index: str
) -> None:
    done = run_python(write(tmp_path / "app.py", APP))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        "gpu undeclared: 2.0",
        "gpu declared: 1.0",
        "gpu not importing it, lacks it: True",
    ], done.stdout
    assert lines[3].startswith("cpu undeclared: "), done.stdout
    assert "acme_torch" in lines[3], done.stdout


def test_the_lock_says_which_packages_came_from_the_base_set(
    fresh_home: Path, stand_in_index: str
) -> None:
    preparer = Preparer(Settings.from_env())
    key = preparer.dependency_key((), (), gpu_imports=("acme_torch", "os"))
    assert key.python == key.base == (STAND_IN,)
    prepared = preparer.build(key)
    assert prepared.lock.base == (STAND_IN,)
    assert prepared.lock.text == "acme-torch==2.0\n"
    declared = preparer.dependency_key(("acme-torch==1.0",), (), gpu_imports=("acme_torch",))
    assert declared.base == () and declared.python == ("acme-torch==1.0",)
    assert preparer.build(declared).lock.base == ()
    cpu = preparer.dependency_key((), ())  # a CPU endpoint passes no imports
    assert cpu.python == cpu.base == ()


def test_flash_check_and_lock_report_the_base_set(
    tmp_path: Path, fresh_home: Path, stand_in_index: str
) -> None:
    project = tmp_path / "proj"
    write(project / "workers.py", APP.split("async def main")[0])
    write(project / "pyproject.toml", "[project]\nname='p'\nversion='0'\n")
    checked = run_flash("check", "--json", cwd=project)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    issues = json.loads(checked.stdout)["issues"]
    base = [i for i in issues if i["kind"] == "gpu-base"]
    assert base == [
        {
            "level": "suggestion",
            "kind": "gpu-base",
            "endpoints": ["gpu_undeclared"],
            "message": "acme-torch==2.0: from the GPU base image (imported, not in "
            "dependencies); declare it to pin a version",
        }
    ]
    shown = run_flash("check", cwd=project)
    said = " ".join((shown.stdout + shown.stderr).split())  # rich may wrap lines
    assert "gpu_undeclared: acme-torch==2.0: from the GPU base image" in said, said
    locked = run_flash("lock", cwd=project)
    assert locked.returncode == 0, locked.stderr
    lock_text = (project / "flash.lock").read_text()
    assert 'dependencies = [\n    "acme-torch==2.0",\n]' in lock_text or (
        'dependencies = ["acme-torch==2.0"]' in lock_text
    ), lock_text


TORCH_ONLY = """
import asyncio
from runpod_flash import Endpoint, GpuType


@Endpoint(name="matmul", gpu=GpuType.NVIDIA_GEFORCE_RTX_4090, workers=(0, 2))
async def matmul(payload: dict) -> dict:
    import torch  # undeclared: the GPU image has it

    return {"as_array": torch.to_numpy(payload.get("n", 3))}


if __name__ == "__main__":
    print(asyncio.run(matmul({"n": 4})))
"""


def test_a_worker_importing_only_torch_finds_numpy_beside_it(
    tmp_path: Path, fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The examples' GPU workers import torch alone; torch reaches for numpy by itself (here a
    tiny stand-in ``torch`` whose ``to_numpy`` imports ``numpy``, both from a loopback index)."""
    torch_src = "def to_numpy(n):\n    import numpy\n    return numpy.VERSION * n\n"
    make_wheel(tmp_path / "index", "torch", "0.1", {"torch/__init__.py": torch_src})
    make_wheel(tmp_path / "index", "numpy", "0.1", {"numpy/__init__.py": "VERSION = 'np'\n"})
    with serve_index(tmp_path / "index") as (url, _):
        monkeypatch.setenv("UV_INDEX_URL", url)
        monkeypatch.setenv("FLASH_TORCH_INDEX_URL", url)
        monkeypatch.setenv("FLASH_GPU_BASE_PACKAGES", "torch==0.1,numpy==0.1")
        done = run_python(write(tmp_path / "gpu_worker.py", TORCH_ONLY))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("{'as_array': 'npnpnpnp'}"), done.stdout
