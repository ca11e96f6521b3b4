"""Which GPU a device is: ``nvidia-smi``'s names and memory mapped to ``GpuType`` and ``GpuGroup``.

An endpoint's ``gpus`` (``[GpuGroup.ADA_24]``, ``GpuType.NVIDIA_H100_80GB_HBM3``, or a list in
priority order) is kept on its workers' spec as ``gpu_types``: the members' values, in order
(``()`` or ``("any",)``: any GPU). A device is described by its ``nvidia-smi`` name and memory;
it is of a ``GpuType`` when the names agree (case aside), and of a ``GpuGroup`` by Runpod's table
of which cards make each group (the memory tells the 40 GB and 80 GB A100s apart).

On Ray a node says which GPUs it has through Ray's own ``accelerator_type:<X>`` resource (set by
Ray from the card, ``H100``, ``L4``, ``A100-80G``...) or a custom ``gpu_type:<GpuType name>``
resource (``ray start --resources='{"gpu_type:NVIDIA_L4": 2}'``), which wins when both are there.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from openflash import _subprocess
from openflash.config.hardware import GpuGroup, GpuType
from openflash.errors import FlashError

__all__ = [
    "ANY",
    "GpuDevice",
    "check_gpu_types",
    "describe",
    "detect_gpu_devices",
    "gpu_types_of",
    "group_of",
    "matches",
    "parse_nvidia_smi_query",
    "ray_node_gpus",
    "ray_nodes_for",
]

ANY = GpuGroup.ANY.value

#: ``nvidia-smi`` arguments whose output ``parse_nvidia_smi_query`` reads.
QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader"]


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One device: its index (a CUDA_VISIBLE_DEVICES value), name and memory in MiB (0: unknown)."""

    index: str
    name: str
    memory_mib: int = 0


# Runpod's groups, by the names nvidia-smi prints (a pattern, searched case-blind), and the least
# memory in GiB a card of that name must have to be in the group.
_GROUPS: list[tuple[str, int, GpuGroup]] = [
    (r"RTX 4090", 0, GpuGroup.ADA_24),
    (r"RTX 5090", 0, GpuGroup.ADA_32_PRO),
    (r"\bL40S?\b|RTX 6000 Ada", 0, GpuGroup.ADA_48_PRO),
    (r"\bH100\b", 0, GpuGroup.ADA_80_PRO),
    (r"RTX A4000|RTX A4500|RTX 4000 Ada|RTX 2000 Ada", 0, GpuGroup.AMPERE_16),
    (r"RTX A5000|\bL4\b|RTX 3090", 0, GpuGroup.AMPERE_24),
    (r"\bA40\b|RTX A6000", 0, GpuGroup.AMPERE_48),
    (r"\bA100\b", 70, GpuGroup.AMPERE_80),
    (r"\bH200\b", 0, GpuGroup.HOPPER_141),
    (r"RTX PRO 6000 Blackwell", 0, GpuGroup.BLACKWELL_96),
    (r"\bB200\b", 0, GpuGroup.BLACKWELL_180),
]

# Ray's accelerator types (ray.util.accelerators) as the nvidia-smi name and memory they stand for.
_RAY_TYPES: dict[str, tuple[str, int]] = {
    "H100": (GpuType.NVIDIA_H100_80GB_HBM3.value, 81559),
    "H200": (GpuType.NVIDIA_H200.value, 143771),
    "B200": (GpuType.NVIDIA_B200.value, 183359),
    "L4": (GpuType.NVIDIA_L4.value, 23034),
    "L40S": ("NVIDIA L40S", 46068),
    "A40": (GpuType.NVIDIA_A40.value, 46068),
    "A100-80G": (GpuType.NVIDIA_A100_SXM4_80GB.value, 81920),
    "A100-40G": ("NVIDIA A100-SXM4-40GB", 40960),
}


def parse_nvidia_smi_query(text: str) -> list[GpuDevice]:
    """The devices in the output of ``nvidia-smi --query-gpu=index,name,memory.total
    --format=csv,noheader`` (``0, NVIDIA L4, 23034 MiB``); lines that are not rows are skipped."""
    devices = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        memory = re.match(r"(\d+)", parts[2])
        devices.append(GpuDevice(parts[0], parts[1], int(memory[1]) if memory else 0))
    return devices


def detect_gpu_devices() -> list[GpuDevice] | None:
    """This machine's devices (honouring CUDA_VISIBLE_DEVICES), or None where ``nvidia-smi``
    is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    done = _subprocess.run([exe, *QUERY], timeout=20, check=False)
    if not done.ok:
        return None
    devices = parse_nvidia_smi_query(done.stdout)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        allowed = {v.strip() for v in visible.split(",") if v.strip()}
        devices = [d for d in devices if d.index in allowed]
    return devices


def group_of(name: str, memory_mib: int = 0) -> GpuGroup | None:
    """The GpuGroup of a card of this name and memory, or None: in none of Runpod's groups."""
    if not memory_mib:  # unknown: the size in the name, if any ("A100 80GB PCIe")
        size = re.search(r"(\d+)\s*GB", name, re.IGNORECASE)
        memory_mib = int(size[1]) * 1024 if size else 0
    for pattern, least_gib, group in _GROUPS:
        if re.search(pattern, name, re.IGNORECASE) and memory_mib >= least_gib * 1000:
            return group
    return None


def gpu_types_of(gpus: Iterable[GpuGroup | GpuType] | None) -> tuple[str, ...]:
    """A spec's ``gpu_types`` from an endpoint's ``gpus``: the values in order, () for any GPU."""
    values = tuple(dict.fromkeys(g.value for g in gpus or ()))
    return () if not values or ANY in values else values


def matches(device: GpuDevice, wanted: str) -> bool:
    """Whether ``device`` is of ``wanted``: a GpuGroup's or GpuType's value, or "any"."""
    if wanted == ANY:
        return True
    if wanted in GpuGroup._value2member_map_:
        return group_of(device.name, device.memory_mib) is GpuGroup(wanted)
    return device.name.casefold() == wanted.casefold()


def describe(devices: Iterable[GpuDevice]) -> str:
    """``2 x NVIDIA H100 80GB HBM3 (ADA_80_PRO), 1 x NVIDIA L4 (AMPERE_24)``, or ``no GPU``."""
    counts: dict[tuple[str, int], int] = {}
    for d in devices:
        counts[(d.name, d.memory_mib)] = counts.get((d.name, d.memory_mib), 0) + 1
    parts = []
    for (name, memory), n in counts.items():
        group = group_of(name, memory)
        parts.append(f"{n} x {name}" + (f" ({group.value})" if group else ""))
    return ", ".join(parts) or "no GPU"


def check_gpu_types(
    endpoint: str, wanted: tuple[str, ...], count: int, devices: Iterable[GpuDevice]
) -> None:
    """Raise unless some entry of ``wanted`` has ``count`` devices among ``devices``."""
    devices = list(devices)
    for choice in wanted or (ANY,):
        if sum(matches(d, choice) for d in devices) >= count:
            return
    raise FlashError(
        f"endpoint {endpoint!r} asks for {count} GPU(s) of {' or '.join(wanted)} per worker, "
        f"and this machine has {describe(devices)}",
        hint="add GpuGroup.ANY or one of the types above to its gpus, or run it where such "
        "GPUs are",
    )


def ray_node_gpus(resources: Mapping[str, float]) -> list[GpuDevice]:
    """The devices a Ray node's resources say it has (all of one type, as Ray's are)."""
    count = int(resources.get("GPU", 0))
    for key in resources:
        if key.startswith("gpu_type:"):
            label = key.removeprefix("gpu_type:")
            member = GpuType.__members__.get(label)
            name = member.value if member else label
            memory = next((m for n, m in _RAY_TYPES.values() if n == name), 0)
            return [GpuDevice(str(i), name, memory) for i in range(count)]
    for key in resources:
        if key.startswith("accelerator_type:"):
            name, memory = _RAY_TYPES.get(key.removeprefix("accelerator_type:"), ("", 0))
            if name:
                return [GpuDevice(str(i), name, memory) for i in range(count)]
    return [GpuDevice(str(i), "", 0) for i in range(count)]


def ray_nodes_for(
    endpoint: str, wanted: tuple[str, ...], count: int, nodes: Mapping[str, Mapping[str, float]]
) -> list[str]:
    """The nodes (of ``{node id: its resources}``) with ``count`` GPUs of the first entry of
    ``wanted`` that any node has; an error naming what each node has when none does."""
    for choice in wanted or (ANY,):
        fitting = [
            node
            for node, resources in nodes.items()
            if sum(matches(d, choice) for d in ray_node_gpus(resources)) >= count
        ]
        if fitting:
            return fitting
    has = "; ".join(
        f"node {node[:8]}: {describe(ray_node_gpus(resources))}"
        for node, resources in nodes.items()
    )
    raise FlashError(
        f"endpoint {endpoint!r} asks for {count} GPU(s) of {' or '.join(wanted)} per worker, "
        f"and no node of the Ray cluster has them ({has})",
        hint="add GpuGroup.ANY or a type above to its gpus, or label a node's GPUs with "
        "`ray start --resources='{\"gpu_type:<GpuType name>\": N}'`",
    )
