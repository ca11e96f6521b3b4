"""torch_backend="auto", the default for endpoints that use torch: the CPU build on CPU endpoints
and on machines without an NVIDIA driver, the build the driver supports on GPU endpoints where
there is one; a setting the user wrote wins. Real uv, real workers.

Neither a GPU nor the PyTorch index exists here. ``nvidia-smi`` is a script on PATH answering as
the real one does (``-L``, ``--query-gpu=...``; the driver version 550.54.15), and the PyTorch
index is the loopback stand-in of tests/index_server.py (its layout: /whl/cpu/, /whl/cu121/),
serving tiny +cpu and +cu121 wheels of a stand-in torch (a module saying its build), through
FLASH_TORCH_INDEX_URL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest
from packaging.tags import Tag

from index_server import serve_index, serve_torch_index
from openflash._settings import Settings
from openflash.deps.download_sizes import human_size, parse_sizes
from openflash.deps.torch_variants import (
    cuda_driver,
    cuda_variants,
    default_backend,
    locked_variant,
)
from openflash.envs.uv_options import uv_options
from openflash.errors import DependencyError
from openflash.prepare import Preparer

from helpers import free_port, make_wheel, run_flash, run_python, write

SCRIPT = """
import asyncio
from openflash import CpuInstanceType, Endpoint, GpuGroup

@Endpoint(name="cpu-torch", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["torch"])
def on_cpu() -> str:
    import torch
    return torch.BUILD

@Endpoint(name="gpu-torch", gpu=GpuGroup.ANY, dependencies=["torch"])
def on_gpu() -> str:
    import torch
    return torch.BUILD

@Endpoint(name="cpu-told", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["torch"],
          torch_backend="cu121")
def told() -> str:
    import torch
    return torch.BUILD

for f in (on_cpu, on_gpu, told):
    print(f.__name__, asyncio.run(f()))
"""


def fake_gpu(directory: Path) -> Path:
    """An ``nvidia-smi`` for one L4 with driver 550.54.15 (no GPU exists here)."""
    script = directory / "nvidia-smi"
    write(
        script,
        """
        #!/bin/sh
        case "$*" in
          -L) echo "GPU 0: NVIDIA L4 (UUID: GPU-5c3b9a52-0000-0000-0000-000000000000)" ;;
          *driver_version*) echo "550.54.15" ;;
          *) echo "0, NVIDIA L4, 23034 MiB" ;;
        esac
        """,
    )
    script.chmod(0o755)
    return directory


def stand_in_torch(folder: Path) -> None:
    for variant in ("cpu", "cu121"):
        files = {"torch.py": f"BUILD = {variant!r}\n"}
        make_wheel(folder / variant, "torch", f"2.1.0+{variant}", files)


@pytest.mark.parametrize("gpu_machine", [True, False], ids=["with-a-driver", "without"])
def test_auto_gives_cpu_endpoints_the_cpu_build_and_gpu_endpoints_the_drivers_build(
    tmp_path: Path, fresh_home: Path, monkeypatch: pytest.MonkeyPatch, gpu_machine: bool
) -> None:
    stand_in_torch(tmp_path / "torch-index")
    monkeypatch.delenv("UV_CUDA_DRIVER_VERSION", raising=False)
    path = os.environ["PATH"]
    if gpu_machine:
        path = f"{fake_gpu(tmp_path / 'bin')}{os.pathsep}{path}"
    script = write(tmp_path / "app.py", SCRIPT)
    # PyPI replaced by an empty index: torch not routed to a build fails fast, never
    # downloading PyPI's CUDA build.
    with (
        serve_torch_index(tmp_path / "torch-index") as (base, requests),
        serve_index(tmp_path / "empty") as (empty, _),
    ):
        env = {"FLASH_TORCH_INDEX_URL": base, "PATH": path, "UV_INDEX_URL": empty}
        done = run_python(script, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    gpu_build = "cu121" if gpu_machine else "cpu"
    assert done.stdout.splitlines() == ["on_cpu cpu", f"on_gpu {gpu_build}", "told cu121"]
    # With the driver, the newest build it runs is asked first (cu129 ... cu121, then cpu).
    asked = [r.split("/")[2] for r in requests if r.endswith("/torch/")]
    assert ("cu129" in asked) == gpu_machine
    assert "cu118" not in asked  # the stand-in's cu121 answered before the older builds


def test_what_auto_decides_and_what_it_leaves_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UV_CUDA_DRIVER_VERSION", raising=False)
    monkeypatch.setenv("PATH", f"{fake_gpu(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    none = uv_options()

    def chosen(specs: tuple[str, ...], imports: tuple[str, ...], gpu: bool, **kw: str) -> object:
        return default_backend(uv_options(**kw), specs, imports, gpu=gpu).torch_backend

    assert chosen(("torch",), (), gpu=False) == "cpu"
    assert chosen(("sentence-transformers",), ("torch",), gpu=True) == "auto"  # imported
    assert chosen(("sentence-transformers",), ("torch.nn.functional",), gpu=False) == "cpu"
    assert chosen(("numpy",), ("numpy",), gpu=False) is None  # no torch: nothing changes
    assert chosen(("torch",), (), gpu=False, torch_backend="cu121") == "cu121"  # written wins
    assert chosen(("torch==2.1.0+cu121",), (), gpu=False) is None  # the pin routes it
    assert default_backend(none, ("./torch-1.0-py3-none-any.whl",), (), gpu=False) == none
    assert cuda_driver() == "550.54.15"
    monkeypatch.setenv("UV_CUDA_DRIVER_VERSION", "470.82.01")  # uv's own override
    assert cuda_driver() == "470.82.01"
    assert cuda_variants("470.82.01")[:2] == ("cu118", "cu117")
    assert cuda_variants("580.65.06")[0] == "cu130"
    assert cuda_variants("not-a-version") == ()
    assert locked_variant("numpy==2.0\ntorch==2.1.0+cu121\n") == "cu121"
    assert locked_variant("torch==2.5.1\n") == "default"
    assert locked_variant("numpy==2.0\n") is None


CHECKED = """
from openflash import CpuInstanceType, Endpoint

@Endpoint(name="embed", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["torch==2.1.0"])
def embed() -> str:
    import torch
    return torch.BUILD
"""


def test_flash_check_reports_the_torch_build_and_its_download_size(
    tmp_path: Path, fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_torch(tmp_path / "torch-index")
    wheel = tmp_path / "torch-index" / "cpu" / "torch-2.1.0+cpu-py3-none-any.whl"
    project = tmp_path / "project"
    write(project / "app.py", CHECKED)
    monkeypatch.delenv("UV_CUDA_DRIVER_VERSION", raising=False)
    with (
        serve_torch_index(tmp_path / "torch-index") as (base, requests),
        serve_index(tmp_path / "empty") as (empty, _),
    ):
        env = {"FLASH_TORCH_INDEX_URL": base, "UV_INDEX_URL": empty}
        done = run_flash("check", str(project), "--json", cwd=project, env=env)
        text = run_flash("check", str(project), cwd=project, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = [i for i in json.loads(done.stdout)["issues"] if i["kind"] == "torch-variant"]
    # The stand-in index serves HTML pages without sizes, as the PyTorch index does: the size
    # is the file's Content-Length (one HEAD request).
    size = wheel.stat().st_size
    assert size < 1000
    assert found == [
        {
            "level": "info",
            "kind": "torch-variant",
            "endpoints": ["embed"],
            "message": f"torch: the cpu build, {size} B to download",
        }
    ]
    assert any(r.startswith("/whl/files/cpu/torch-2.1.0+cpu") for r in requests)
    assert "info: embed: torch: the cpu build" in text.stderr
    assert "all endpoints resolve" in text.stderr


def test_sizes_come_from_uvs_pylock_and_the_wheel_for_this_interpreter() -> None:
    # Saved from `uv pip compile --format pylock.toml` against PyPI (sizes from its JSON API).
    pylock = """
lock-version = "1.0"
created-by = "uv"

[[packages]]
name = "Idna"
version = "3.10"
sdist = { url = "https://files.example/idna-3.10.tar.gz", size = 190490 }
wheels = [{ url = "https://files.example/idna-3.10-py3-none-any.whl", size = 70442 }]

[[packages]]
name = "fast"
version = "1.0"
wheels = [
  { url = "https://files.example/fast-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", size = 900 },
  { url = "https://files.example/fast-1.0-py3-none-any.whl", size = 100 },
]

[[packages]]
name = "html-only"
version = "1.0"
wheels = [{ url = "https://torch.example/html_only-1.0%2Bcpu-py3-none-any.whl" }]
"""
    tags = [Tag("cp311", "cp311", "manylinux_2_17_x86_64"), Tag("py3", "none", "any")]
    asked: list[str] = []

    def head(url: str) -> int | None:
        asked.append(url)
        return 4321

    sizes = parse_sizes(pylock, tags, head=head)
    assert sizes == {"idna": 70442, "fast": 900, "html-only": 4321}
    assert asked == ["https://torch.example/html_only-1.0%2Bcpu-py3-none-any.whl"]
    assert human_size(4_700_000_000) == "4.7 GB" and human_size(70442) == "70 kB"


def test_a_default_backend_whose_index_cannot_be_reached_falls_back_with_a_warning(
    tmp_path: Path,
    fresh_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A PyPI-only mirror (a loopback index holding a plain torch) and no PyTorch index: the
    # stand-in's base is a port nothing listens on.
    make_wheel(tmp_path / "pypi", "torch", "2.1.0", {"torch.py": "BUILD = 'default'\n"})
    monkeypatch.setenv("FLASH_TORCH_INDEX_URL", f"http://127.0.0.1:{free_port()}/whl")
    monkeypatch.delenv("UV_CUDA_DRIVER_VERSION", raising=False)
    with serve_index(tmp_path / "pypi") as (pypi, _):
        monkeypatch.setenv("UV_INDEX_URL", pypi)
        preparer = Preparer(dataclasses.replace(Settings.from_env(), resolve_ttl=0))
        # Written, it is an error (first: with nothing in uv's cache for this index, the
        # offline fallback of deps/resolve.py has nothing to offer either).
        written = preparer.dependency_key(
            ("torch",), (), options=uv_options(torch_backend="cpu"), imports=("torch",)
        )
        with pytest.raises(DependencyError, match="could not reach the package index"):
            preparer.resolve(written.python, written.options)
        default = preparer.dependency_key(("torch",), (), imports=("torch",), gpu=False)
        assert (default.options.torch_backend, default.options.torch_default) == ("cpu", True)
        with caplog.at_level(logging.WARNING, logger="openflash"):
            assert preparer.resolve(default.python, default.options).text == "torch==2.1.0\n"
        assert "the PyTorch index could not be reached for the cpu build" in caplog.text
