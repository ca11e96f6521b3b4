"""``Endpoint``'s arguments checked and normalised: ``gpu``, ``cpu`` and ``workers`` (the forms
Runpod Flash accepts), each bad value a ConfigError naming it."""

from __future__ import annotations

from typing import Any

from openflash.config.hardware import CpuInstanceType, GpuGroup, GpuType
from openflash.errors import ConfigError

__all__ = ["cpus", "gpus", "workers_range"]


def gpus(gpu: Any) -> list[GpuGroup | GpuType] | None:
    if gpu is None:
        return None
    items = list(gpu) if isinstance(gpu, (list, tuple)) else [gpu]
    for item in items:
        if not isinstance(item, (GpuGroup, GpuType)):
            raise ConfigError(
                f"gpu must be a GpuGroup, a GpuType or a list of them, got {item!r}",
                hint="e.g. gpu=GpuGroup.ADA_24 or gpu=GpuType.NVIDIA_L4",
            )
    return items


def cpus(cpu: Any) -> list[CpuInstanceType] | None:
    if cpu is None:
        return None
    items = list(cpu) if isinstance(cpu, (list, tuple)) else [cpu]
    result = []
    valid = [c.value for c in CpuInstanceType]
    for item in items:
        try:
            result.append(CpuInstanceType(item))
        except ValueError:
            raise ConfigError(
                f"cpu={item!r} is not a CPU instance type",
                hint=f"use a CpuInstanceType member or one of {valid}",
            ) from None
    return result


def workers_range(workers: Any) -> tuple[int, int]:
    if workers is None:
        return 0, 1
    if isinstance(workers, bool):
        pass
    elif isinstance(workers, int):
        low, high = 0, workers
        if high < 1:
            raise ConfigError(
                f"workers={workers} must be at least 1",
                hint="workers=N means up to N workers; (min, max) sets both",
            )
        return low, high
    elif isinstance(workers, (tuple, list)) and len(workers) == 2:
        low, high = workers
        if isinstance(low, int) and isinstance(high, int):
            if low < 0 or high < 1 or low > high:
                raise ConfigError(
                    f"workers=({low}, {high}) is not a valid (min, max) range",
                    hint="use 0 <= min <= max and max >= 1, e.g. workers=(0, 3)",
                )
            return low, high
    raise ConfigError(
        f"workers must be an int or a (min, max) tuple, got {workers!r}",
        hint="e.g. workers=3 or workers=(1, 3)",
    )
