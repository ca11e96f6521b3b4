"""Every version constraint form of the user guide, with the original ``@remote`` decorator.

python examples/dependencies/versioned_worker.py
"""

import asyncio

from runpod_flash import CpuLiveServerless, remote

config = CpuLiveServerless(name="deps_versioned", workersMax=2)


@remote(
    resource_config=config,
    dependencies=[
        "python-dateutil==2.9.0.post0",  # exact version (==)
        "Pillow>=10.0.0",  # minimum version (>=)
        "numpy<2.0.0",  # maximum version (<)
        "requests~=2.31.0",  # compatible release (~=): >=2.31.0, <2.32.0
        "six",  # latest version
    ],
)
def versions(data: dict) -> dict:
    """A plain (sync) function: calling it still returns an awaitable."""
    import dateutil
    import numpy
    import PIL
    import PIL.Image
    import requests
    import six

    image = PIL.Image.new("RGB", tuple(data.get("size", (4, 3))))
    return {
        "python-dateutil": dateutil.__version__,
        "Pillow": PIL.__version__,
        "numpy": numpy.__version__,
        "requests": requests.__version__,
        "six": six.__version__,
        "image_size": list(image.size),
    }


async def main() -> None:
    result = await versions({"size": [8, 5]})
    for name, value in result.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    asyncio.run(main())
