"""The public surface is exactly what ``__all__`` lists (after encode/httpx's test)."""

import openflash
import runpod_flash


def test_all_exports_are_exactly_the_public_names() -> None:
    public = {name for name in dir(openflash) if not name.startswith("_")}
    # Subpackages are importable as attributes once loaded; they are not part of the API.
    subpackages = {
        "api",
        "backends",
        "cli",
        "config",
        "deps",
        "envs",
        "errors",
        "prepare",
        "project",
        "runtime",
        "server",
        "workers",
    }
    assert public - subpackages == set(openflash.__all__) - {"__version__"}
    for name in openflash.__all__:
        assert getattr(openflash, name) is not None


def test_runpod_flash_reexports_the_same_objects() -> None:
    assert runpod_flash.__all__ == openflash.__all__
    for name in openflash.__all__:
        assert getattr(runpod_flash, name) is getattr(openflash, name)


def test_the_names_user_guides_import_exist() -> None:
    from runpod_flash import (  # noqa: F401
        CpuInstanceType,
        CpuLiveServerless,
        Endpoint,
        GpuGroup,
        GpuType,
        LiveServerless,
        ServerlessEndpoint,
        remote,
    )


def test_the_light_client_inside_workers_offers_every_public_name() -> None:
    import importlib

    from openflash.envs.bundle import LIGHT_NAMES

    # A worker's `from runpod_flash import X` resolves X through this map (envs/bundle.py).
    assert set(LIGHT_NAMES) == set(openflash.__all__) - {"__version__"}
    for name, module in LIGHT_NAMES.items():
        light = getattr(importlib.import_module(module), name)
        if module != "openflash.workers.client":  # enums and errors: openflash's own
            assert light is getattr(openflash, name)
