"""GPU types: nvidia-smi's names and memory mapped to GpuType/GpuGroup, and endpoints given devices
of the types they allow, in their order. No GPU exists here: ``nvidia-smi`` is a script printing
what the real one prints for a machine of mixed cards (the one thing mocked: it cannot exist)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest
from test_local import gather_facts

from openflash import GpuGroup, GpuType
from openflash.backends.gpu_types import (
    GpuDevice,
    detect_gpu_devices,
    gpu_types_of,
    group_of,
    matches,
    parse_nvidia_smi_query,
    ray_node_gpus,
)
from openflash.backends.gpus import GpuAllocator
from openflash.backends.local import LocalBackend
from openflash.errors import FlashError
from openflash.workers.port import WorkerSpec

from test_gpus import fake_nvidia_smi

# Saved from `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader` on machines
# with these cards, here on one imagined machine.
MIXED = """\
0, NVIDIA H100 80GB HBM3, 81559 MiB
1, NVIDIA L4, 23034 MiB
2, NVIDIA H100 80GB HBM3, 81559 MiB
3, NVIDIA GeForce RTX 4090, 24564 MiB
"""
MIXED_L = "".join(
    f"GPU {d.index}: {d.name} (UUID: GPU-{d.index}0000000-0000-0000-0000-000000000000)\n"
    for d in parse_nvidia_smi_query(MIXED)
)
A100S = """\
0, NVIDIA A100-SXM4-40GB, 40960 MiB
1, NVIDIA A100-SXM4-80GB, 81920 MiB
2, NVIDIA A100 80GB PCIe, 81920 MiB
"""


def test_the_query_output_is_parsed_into_devices() -> None:
    assert parse_nvidia_smi_query(MIXED)[:2] == [
        GpuDevice("0", "NVIDIA H100 80GB HBM3", 81559),
        GpuDevice("1", "NVIDIA L4", 23034),
    ]
    assert parse_nvidia_smi_query("No devices were found\n") == []
    assert parse_nvidia_smi_query("") == []
    assert parse_nvidia_smi_query("0, Tesla T4, [N/A]\n") == [GpuDevice("0", "Tesla T4", 0)]


def test_names_and_memory_map_to_runpods_groups() -> None:
    groups = {d.name: group_of(d.name, d.memory_mib) for d in parse_nvidia_smi_query(MIXED)}
    assert groups == {
        "NVIDIA H100 80GB HBM3": GpuGroup.ADA_80_PRO,
        "NVIDIA L4": GpuGroup.AMPERE_24,
        "NVIDIA GeForce RTX 4090": GpuGroup.ADA_24,
    }
    # The memory tells the A100s apart: the 40 GB one is in no group.
    assert [group_of(d.name, d.memory_mib) for d in parse_nvidia_smi_query(A100S)] == [
        None,
        GpuGroup.AMPERE_80,
        GpuGroup.AMPERE_80,
    ]
    assert group_of("NVIDIA H200", 143771) is GpuGroup.HOPPER_141
    assert group_of("NVIDIA A100 80GB PCIe") is GpuGroup.AMPERE_80  # memory unknown: the name's
    assert group_of("Tesla T4", 15360) is None
    h100 = GpuDevice("0", "NVIDIA H100 80GB HBM3", 81559)
    assert matches(h100, GpuType.NVIDIA_H100_80GB_HBM3.value)
    assert matches(h100, GpuType.H100_80GB_HBM3.value)  # the newer alias
    assert matches(h100, "ADA_80_PRO") and matches(h100, "any")
    assert not matches(h100, "AMPERE_80") and not matches(h100, "NVIDIA L4")


def test_an_endpoints_gpus_become_its_types_in_order() -> None:
    assert gpu_types_of([GpuGroup.ANY]) == ()
    assert gpu_types_of(None) == ()
    assert gpu_types_of([GpuGroup.ADA_24, GpuType.NVIDIA_H100_80GB_HBM3, GpuGroup.ANY]) == ()
    assert gpu_types_of([GpuType.NVIDIA_L4, GpuGroup.ADA_24, GpuType.L4]) == (
        "NVIDIA L4",
        "ADA_24",
    )


def test_detect_reads_names_and_memory_and_honours_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path, MIXED_L, MIXED)}{os.pathsep}/usr/bin")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert detect_gpu_devices() == [
        GpuDevice("1", "NVIDIA L4", 23034),
        GpuDevice("3", "NVIDIA GeForce RTX 4090", 24564),
    ]
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert detect_gpu_devices() is None


def _mixed() -> GpuAllocator:
    devices = parse_nvidia_smi_query(MIXED)
    return GpuAllocator(tuple(d.index for d in devices), 5.0, {d.index: d for d in devices})


def test_devices_of_the_first_allowed_type_with_enough_free_then_the_next() -> None:
    async def main() -> None:
        gpus = _mixed()
        order = ("ADA_24", "NVIDIA H100 80GB HBM3")
        assert await gpus.acquire(1, "e", order) == ("3",)  # the 4090 first
        assert await gpus.acquire(1, "e", order) == ("0",)  # then an H100
        assert await gpus.acquire(1, "e", order) == ("2",)
        assert await gpus.acquire(1, "any", ()) == ("1",)  # ANY: what is left
        waiting = asyncio.ensure_future(gpus.acquire(1, "e", ("AMPERE_24",)))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # the machine has an L4, held: it waits for it
        await gpus.release(("0",))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # an H100 came back, not an L4
        await gpus.release(("1",))
        assert await asyncio.wait_for(waiting, 5) == ("1",)
        await gpus.release(("2",))
        # Two L4s are not there (one, held): two H100s, the next type in the list.
        assert await gpus.acquire(2, "e", ("AMPERE_24", "ADA_80_PRO")) == ("0", "2")

    asyncio.run(main())


def test_a_type_the_machine_lacks_fails_at_once_naming_what_it_has() -> None:
    async def main() -> None:
        gpus = _mixed()
        with pytest.raises(FlashError) as info:
            await gpus.acquire(1, "big", ("HOPPER_141", "NVIDIA B200"))
        message = str(info.value)
        assert "'big' asks for 1 GPU(s) of HOPPER_141 or NVIDIA B200" in message
        assert "2 x NVIDIA H100 80GB HBM3 (ADA_80_PRO)" in message
        assert "1 x NVIDIA L4 (AMPERE_24)" in message
        assert "GpuGroup.ANY" in info.value.hint
        with pytest.raises(FlashError, match="asks for 2 GPU\\(s\\) of AMPERE_24"):
            await gpus.acquire(2, "two-l4", ("AMPERE_24",))  # one L4 only

    asyncio.run(main())


def test_local_workers_get_devices_of_their_types(
    bare_spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path, MIXED_L, MIXED)}{os.pathsep}/usr/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    l4 = dataclasses.replace(bare_spec, endpoint="l4", gpu_count=1, gpu_types=("AMPERE_24",))
    [facts] = gather_facts(l4, LocalBackend(), 1)
    assert facts["cuda"] == "1"
    ordered = dataclasses.replace(
        bare_spec, endpoint="ordered", gpu_count=1, gpu_types=("ADA_24", "ADA_80_PRO")
    )
    facts = gather_facts(ordered, LocalBackend(), 2)
    assert sorted(f["cuda"] for f in facts) == ["0", "3"]  # the 4090, then the first H100
    lacking = dataclasses.replace(
        bare_spec, endpoint="h200", gpu_count=1, gpu_types=("NVIDIA H200",)
    )
    with pytest.raises(FlashError, match="this machine has 2 x NVIDIA H100"):
        gather_facts(lacking, LocalBackend(), 1)


def test_a_ray_nodes_gpus_from_its_resources() -> None:
    assert ray_node_gpus({"CPU": 2, "GPU": 2, "accelerator_type:H100": 1}) == [
        GpuDevice("0", "NVIDIA H100 80GB HBM3", 81559),
        GpuDevice("1", "NVIDIA H100 80GB HBM3", 81559),
    ]
    # A custom label wins over Ray's own; a member name or a value.
    labelled = ray_node_gpus({"GPU": 1, "accelerator_type:A10G": 1, "gpu_type:NVIDIA_L4": 1})
    assert [group_of(d.name, d.memory_mib) for d in labelled] == [GpuGroup.AMPERE_24]
    assert ray_node_gpus({"GPU": 1, "gpu_type:NVIDIA RTX A6000": 1})[0].name == "NVIDIA RTX A6000"
    assert ray_node_gpus({"CPU": 4}) == []
