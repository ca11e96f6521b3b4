"""The process's runtime: started on first use, configured, stopped at exit (or after a fork).

User code never sees a Runtime (runtime.py): ``remote`` and ``Endpoint`` handles ask for this
process's with ``get_runtime``; a server puts it on its own event loop (``run_on_current_loop``).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import os
import threading
from typing import TypedDict

from openflash._settings import BACKENDS, Settings
from openflash.errors import ConfigError
from openflash.runtime import dumpable, stopping
from openflash.runtime.core import Runtime

__all__ = [
    "configure",
    "current",
    "get_runtime",
    "run_on_current_loop",
    "shutdown",
    "shutdown_current_loop",
]


class _Overrides(TypedDict, total=False):
    """The Settings fields `configure` sets."""

    backend: str
    ray_address: str


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
#: What `configure` changed, on top of the settings read from the environment.
_overrides: _Overrides = {}


def configure(*, backend: str | None = None, address: str | None = None) -> None:
    """Choose where this process's workers run, instead of FLASH_BACKEND and RAY_ADDRESS.

        openflash.configure(backend="ray", address="10.0.0.5:6379")

    Workers already running stop; the next call starts on the chosen backend.
    """
    if backend is not None:
        if backend not in BACKENDS:
            raise ConfigError(
                f"backend={backend!r} is not a backend",
                hint=f"use one of: {', '.join(repr(b) for b in BACKENDS)}",
            )
        _overrides["backend"] = backend
    if address is not None:
        _overrides["ray_address"] = address
    shutdown()


def _settings() -> Settings:
    return dataclasses.replace(Settings.from_env(), **_overrides)


def get_runtime() -> Runtime:
    """The process's runtime, started on first use with settings read from the environment."""
    global _runtime
    runtime = _runtime
    if runtime is not None:
        return runtime
    with _runtime_lock:
        if _runtime is None:
            settings = _settings()
            dumpable.protect(settings.non_dumpable, "program")  # FLASH_NON_DUMPABLE=all
            _runtime = Runtime(settings)
            stopping.install(current)
        return _runtime


def current() -> Runtime | None:
    """The process's runtime if one runs (none is started)."""
    return _runtime


def run_on_current_loop() -> Runtime:
    """Make the process's runtime live on the running event loop (a server's), and return it."""
    global _runtime
    shutdown()
    with _runtime_lock:
        _runtime = Runtime(_settings(), loop=asyncio.get_running_loop())
        stopping.install(current)  # the server handles signals; this kills builds at exit
        return _runtime


async def shutdown_current_loop() -> None:
    """Stop the runtime ``run_on_current_loop`` made, from that loop."""
    global _runtime
    with _runtime_lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        await runtime.aclose()


def shutdown() -> None:
    """Stop every worker and the runtime thread; the next call starts a fresh runtime."""
    global _runtime
    with _runtime_lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        runtime.close()


def _forget_after_fork() -> None:
    # A forked child has the runtime's objects but not its thread: start over if it calls.
    global _runtime, _runtime_lock
    _runtime = None
    _runtime_lock = threading.Lock()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
