"""GPU discovery and hand-out. This machine has no GPU: ``nvidia-smi`` is faked by a script that
prints what the real one prints (the one thing mocked here, because it cannot exist here)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from openflash.backends.gpus import GpuAllocator, detect_gpus, parse_nvidia_smi_list
from openflash.errors import FlashError

NVIDIA_SMI_L = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1f2e3d4c-0000-1111-2222-333344445555)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaabbbb-0000-1111-2222-333344445555)
GPU 2: NVIDIA L4 (UUID: GPU-ccccdddd-0000-1111-2222-333344445555)
"""


NVIDIA_SMI_QUERY = """\
0, NVIDIA H100 80GB HBM3, 81559 MiB
1, NVIDIA H100 80GB HBM3, 81559 MiB
2, NVIDIA L4, 23034 MiB
"""


def fake_nvidia_smi(
    directory: Path, output: str = NVIDIA_SMI_L, query: str = NVIDIA_SMI_QUERY
) -> Path:
    """A script answering ``nvidia-smi -L`` with ``output`` and ``nvidia-smi --query-gpu=...``
    with ``query``, as the real one does."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nvidia-smi"
    script.write_text(
        f"#!/bin/sh\nif [ \"$1\" = -L ]; then\ncat <<'EOF'\n{output}EOF\nelse\n"
        f"cat <<'EOF'\n{query}EOF\nfi\n"
    )
    script.chmod(0o755)
    return directory


def test_parse_lists_indexes_and_names() -> None:
    assert parse_nvidia_smi_list(NVIDIA_SMI_L) == [
        ("0", "NVIDIA H100 80GB HBM3"),
        ("1", "NVIDIA H100 80GB HBM3"),
        ("2", "NVIDIA L4"),
    ]
    assert parse_nvidia_smi_list("No devices were found\n") == []
    assert parse_nvidia_smi_list("") == []


def test_detect_uses_nvidia_smi_and_honours_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpus() == ("0", "1", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert detect_gpus() == ("0", "2")


def test_no_nvidia_smi_means_no_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == ()


def test_allocator_hands_out_distinct_devices_and_waits_for_returns() -> None:
    async def main() -> None:
        gpus = GpuAllocator(("0", "1", "2"))
        a = await gpus.acquire(2, "e")
        b = await gpus.acquire(1, "e")
        assert sorted(a + b) == ["0", "1", "2"]
        waiting = asyncio.ensure_future(gpus.acquire(2, "e"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await gpus.release(a)
        assert sorted(await asyncio.wait_for(waiting, 5)) == sorted(a)
        with pytest.raises(FlashError, match="asks for 4 GPUs per worker, but this machine has 3"):
            await gpus.acquire(4, "e")

    asyncio.run(main())


def test_waiting_for_a_gpu_ends_with_an_error_naming_the_holders() -> None:
    async def main() -> None:
        gpus = GpuAllocator(("0",), wait_timeout=0.2)
        await gpus.acquire(1, "holder")
        with pytest.raises(FlashError, match=r"'waiter' waited 0.2 s .* \(0 by 'holder'\)") as info:
            await gpus.acquire(1, "waiter")
        assert "workersMin" in info.value.hint

    asyncio.run(main())
