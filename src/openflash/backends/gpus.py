"""NVIDIA GPUs on this machine: found with ``nvidia-smi -L``, handed out to workers one at a time.

A worker asking for ``gpuCount`` devices gets that many that no other worker holds, as a
``CUDA_VISIBLE_DEVICES`` value; it waits while they are all taken. With GPU types (its endpoint's
``gpus``, gpu_types.py) it gets devices of the first type in its list that has enough free, waits
while types the machine has are taken, and fails at once when the machine has none of them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Mapping

from openflash import _subprocess
from openflash.backends.gpu_types import ANY, GpuDevice, check_gpu_types, matches
from openflash.errors import FlashError

__all__ = ["GpuAllocator", "detect_gpus", "parse_nvidia_smi_list"]

_LINE = re.compile(r"^GPU (\d+): (.+?)(?: \(UUID: ([^)]+)\))?\s*$")


def parse_nvidia_smi_list(text: str) -> list[tuple[str, str]]:
    """``[(index, name), ...]`` from the output of ``nvidia-smi -L``."""
    found = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match:
            found.append((match[1], match[2]))
    return found


def detect_gpus() -> tuple[str, ...]:
    """Indexes of the NVIDIA GPUs this process may use (honouring CUDA_VISIBLE_DEVICES)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    done = _subprocess.run([exe, "-L"], timeout=20, check=False)
    if not done.ok:
        return ()
    indexes = tuple(index for index, _ in parse_nvidia_smi_list(done.stdout))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        allowed = [v.strip() for v in visible.split(",") if v.strip()]
        indexes = tuple(i for i in indexes if i in allowed)
    return indexes


class GpuAllocator:
    """Hands out distinct devices; used from one event loop."""

    def __init__(
        self,
        devices: tuple[str, ...],
        wait_timeout: float = 300.0,
        kinds: Mapping[str, GpuDevice] | None = None,
    ) -> None:
        self.devices = devices
        #: What each device is (from nvidia-smi); a device missing here is of no known type.
        self.kinds = {d: (kinds or {}).get(d, GpuDevice(d, "")) for d in devices}
        self.wait_timeout = wait_timeout
        self._free = list(devices)
        self._holders: dict[str, str] = {}
        self._changed: asyncio.Condition | None = None

    @classmethod
    def detected(cls) -> GpuAllocator:
        """An allocator of this machine's devices, each known by its name and memory."""
        from openflash.backends.gpu_types import detect_gpu_devices

        found = detect_gpu_devices()
        if not found:  # an nvidia-smi without --query-gpu: indexes only
            return cls(detect_gpus())
        return cls(tuple(d.index for d in found), kinds={d.index: d for d in found})

    def _free_of(self, count: int, wanted: tuple[str, ...]) -> list[str] | None:
        """``count`` free devices of the first entry of ``wanted`` that has them, or None."""
        for choice in wanted or (ANY,):
            fitting = [d for d in self._free if matches(self.kinds[d], choice)]
            if len(fitting) >= count:
                return fitting[:count]
        return None

    async def acquire(
        self, count: int, endpoint: str, wanted: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        """``count`` devices for a worker of ``endpoint`` of a type in ``wanted`` (in its order;
        empty: any), waiting while others hold them."""
        if wanted and ANY not in wanted:
            check_gpu_types(endpoint, wanted, count, self.kinds.values())
        if count > len(self.devices):
            raise FlashError(
                f"endpoint {endpoint!r} asks for {count} GPUs per worker, but this machine has "
                f"{len(self.devices)} ({', '.join(self.devices) or 'none'})",
                hint=f"lower gpuCount to at most {len(self.devices)}",
            )
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._free_of(count, wanted) is not None),
                    self.wait_timeout,
                )
            except asyncio.TimeoutError:
                held = ", ".join(f"{d} by {e!r}" for d, e in sorted(self._holders.items()))
                raise FlashError(
                    f"endpoint {endpoint!r} waited {self.wait_timeout:g} s for {count} free "
                    f"GPU(s); all are held by running workers ({held})",
                    hint="lower workersMin of the endpoints holding them, or their idleTimeout, "
                    "so that idle workers give their GPUs back",
                ) from None
            taken = self._free_of(count, wanted) or []
            self._free = [d for d in self._free if d not in taken]
        self._holders.update(dict.fromkeys(taken, endpoint))
        return tuple(taken)

    async def release(self, devices: tuple[str, ...]) -> None:
        if not devices:
            return
        for device in devices:
            self._holders.pop(device, None)
        self._free.extend(d for d in devices if d not in self._free)
        self._free.sort(key=self.devices.index)
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
