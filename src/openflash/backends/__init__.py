"""Where workers run: ``local`` processes (the default) or ``ray`` actors, chosen by name."""

from __future__ import annotations

import importlib

from openflash._settings import BACKENDS, Settings
from openflash.errors import ConfigError
from openflash.prepare import Preparer
from openflash.workers.port import Backend

__all__ = ["load_backend"]


def load_backend(settings: Settings, preparer: Preparer) -> Backend:
    """The backend ``settings`` name, imported only now (Ray's only when asked for).

    ``preparer`` is the process's one preparer: a backend whose workers build their own
    environments (Ray) resolves what they need through it.
    """
    module_name, _, class_name = BACKENDS[settings.backend].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"the {settings.backend!r} backend cannot be loaded: {e}",
            hint=f"install it with: pip install 'openflash[{settings.backend}]'",
        ) from e
    backend: Backend = getattr(module, class_name).from_settings(settings, preparer)
    return backend
