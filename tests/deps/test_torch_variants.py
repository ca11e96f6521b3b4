"""torch variants: a +cpu/+cu121 pin of the torch family routes it to the PyTorch index.

The PyTorch index (download.pytorch.org/whl) cannot be reached from here: these tests use a
loopback stand-in with its layout (PEP 503 simple pages per variant, /whl/cpu/ and /whl/cu121/,
tests/index_server.py) serving tiny +cpu and +cu121 wheels of a stand-in torch family
(packages named torch and torchvision, built here), through FLASH_TORCH_INDEX_URL. Real uv.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from index_server import serve_torch_index
from openflash._settings import Settings
from openflash.deps.specs import normalize_dependencies
from openflash.deps.torch_variants import DEFAULT_TORCH_INDEX, pinned_variant, route_torch
from openflash.envs.uv_options import uv_options
from openflash.errors import DependencyError
from openflash.prepare import DependencyKey, Preparer

from helpers import make_wheel


def stand_in_torch(folder: Path) -> None:
    """Stand-in torch family wheels (not PyTorch): one module each, saying its build."""
    for variant in ("cpu", "cu121"):
        for name, version in (("torch", "2.1.0"), ("torchvision", "0.16.0")):
            make_wheel(
                folder / variant,
                name,
                f"{version}+{variant}",
                {f"{name}.py": f"BUILD = {variant!r}\n"},
            )


def test_the_user_guides_cu121_pin_resolves_and_builds_against_the_stand_in_index(
    tmp_path: Path, fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_torch(tmp_path / "torch-index")
    # The user guide's troubleshooting example (dependency-management.md), as written.
    specs = normalize_dependencies(["torch==2.1.0", "torchvision==0.16.0+cu121"])
    with serve_torch_index(tmp_path / "torch-index") as (base, requests):
        monkeypatch.setenv("FLASH_TORCH_INDEX_URL", base)
        preparer = Preparer(dataclasses.replace(Settings.from_env(), resolve_ttl=0))
        prepared = preparer.build(DependencyKey(specs, ()))
        cpu = preparer.resolve(normalize_dependencies(["torch==2.1.0+cpu", "torchvision"]))
    assert prepared.lock.text == "torch==2.1.0+cu121\ntorchvision==0.16.0+cu121\n"
    assert cpu.text == "torch==2.1.0+cpu\ntorchvision==0.16.0+cpu\n"
    assert any(r.startswith("/whl/cu121/torchvision") for r in requests)
    assert any(r.startswith("/whl/cpu/torch") for r in requests)
    assert prepared.environment is not None
    site = next((prepared.environment.path / "lib").glob("python*/site-packages"))
    assert (site / "torch.py").read_text() == "BUILD = 'cu121'\n"


def test_routing_with_the_real_index_is_uvs_torch_backend_and_pins_must_agree() -> None:
    none = uv_options()
    assert pinned_variant(("torch==2.4.1+cpu", "numpy")) == "cpu"
    assert pinned_variant(("torch==2.4.1", "numpy==2.0+cpu")) is None  # not the torch family
    assert route_torch(("torch==2.4.1+cpu",), none, DEFAULT_TORCH_INDEX).torch_backend == "cpu"
    mirror = route_torch(("torch",), uv_options(torch_backend="cu121"), "http://m/whl/")
    assert (mirror.torch_backend, mirror.extra_index_urls) == (None, ("http://m/whl/cu121",))
    assert route_torch(("torch",), none, DEFAULT_TORCH_INDEX) == none
    with pytest.raises(DependencyError, match=r"different PyTorch builds \(cpu, cu121\)"):
        pinned_variant(("torch==2.1.0+cpu", "torchvision==0.16.0+cu121"))
    with pytest.raises(DependencyError, match="torch_backend='cpu' and the pinned build"):
        route_torch(("torch==2.1.0+cu121",), uv_options(torch_backend="cpu"), DEFAULT_TORCH_INDEX)
