"""Compatibility package: programs written for Runpod Flash run unchanged on openflash.

    from runpod_flash import remote, LiveServerless

It re-exports openflash's public API and nothing more.
"""

from openflash import *  # noqa: F403
from openflash import __all__ as _openflash_all
from openflash import __version__ as __version__

__all__ = list(_openflash_all)
del _openflash_all
