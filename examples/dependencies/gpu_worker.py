"""A GPU endpoint with pinned ML dependencies, and a class endpoint that keeps its model loaded.

    python examples/dependencies/gpu_worker.py

With an NVIDIA GPU each worker gets its own device (CUDA_VISIBLE_DEVICES); without one it runs on
the CPU after one warning (FLASH_REQUIRE_GPU=1 makes that an error). The first run downloads
torch (several GB for a CUDA build) once into openflash's cache.
"""

import asyncio

from runpod_flash import GpuGroup, LiveServerless, remote

gpu_config = LiveServerless(
    name="deps_ml", gpus=[GpuGroup.ADA_24, GpuGroup.AMPERE_80], workersMax=2
)


@remote(
    resource_config=gpu_config,
    dependencies=[
        "torch==2.1.0",  # GPU operations
        "Pillow>=10.0.0",  # image processing
        "numpy<2.0.0",  # torch 2.1 was built against numpy 1.x
    ],
)
async def tensor_report(data: dict) -> dict:
    import numpy as np
    import PIL
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = int(data.get("size", 256))
    x = torch.randn(size, size, device=device)
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "sum_of_squares": float((x * x).sum()),
        "versions": {
            "torch": torch.__version__,
            "Pillow": PIL.__version__,
            "numpy": np.__version__,
        },
    }


@remote(resource_config=LiveServerless(name="deps_ml_model"), dependencies=["torch==2.1.0"])
class Scaler:
    """Built once on its worker; every method call reuses it."""

    def __init__(self, factor: float) -> None:
        import torch

        self.factor = torch.tensor(factor)
        self.calls = 0

    def scale(self, values: list[float]) -> list[float]:
        import torch

        self.calls += 1
        return (torch.tensor(values) * self.factor).tolist()


async def main() -> None:
    print(await tensor_report({"size": 128}))
    scaler = Scaler(2.5)
    print(await scaler.scale([1.0, 2.0]))


if __name__ == "__main__":
    asyncio.run(main())
