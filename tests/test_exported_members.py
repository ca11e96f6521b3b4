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
    import types

    from openflash.envs.bundle import LIGHT_MODULES, light_init, light_names, public_names

    # The map is derived from openflash's __all__ (read from its source) and the light modules'.
    assert public_names() == openflash.__all__
    assert set(light_names()) == set(openflash.__all__) - {"__version__"}
    # A worker's `from runpod_flash import X` resolves X through the light openflash package that
    # envs/bundle.py writes: run its source here, against this process's modules.
    light = types.ModuleType("light_openflash")
    exec(compile(light_init(), "<light openflash>", "exec"), light.__dict__)
    assert light.__all__ == openflash.__all__
    assert light.__version__ == openflash.__version__
    for name, module in light_names().items():
        value = getattr(light, name)  # each name resolves
        if module == "openflash.workers.client":  # decorators and configs: the light ones
            assert value is getattr(importlib.import_module(module), name)
        else:  # enums and errors: openflash's own
            assert value is getattr(openflash, name)
    assert set(light_names().values()) == set(LIGHT_MODULES)


def test_the_errors_that_reach_users_are_public() -> None:
    from openflash.errors import DeadlockError, StoreFullError, StorePermissionError

    for error in (DeadlockError, StoreFullError, StorePermissionError):
        assert error.__name__ in openflash.__all__
        assert getattr(openflash, error.__name__) is error
        assert getattr(runpod_flash, error.__name__) is error
