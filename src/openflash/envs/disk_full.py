"""A full disk, told as such: ``StoreFullError`` naming the file being written and the space
left, whether the error is an ``OSError`` (ENOSPC, EDQUOT) or a tool's failure quoting one (uv,
apt, dpkg-deb)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from openflash.errors import FlashError, StoreFullError

__all__ = ["disk_full", "free_space", "full_error"]


def disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)  # what uv, apt or dpkg-deb said, quoted in a FlashError
    return isinstance(error, FlashError) and any(
        said in text for said in ("No space left on device", "os error 28", "Disk quota exceeded")
    )


def full_error(error: BaseException, path: Path) -> BaseException:
    """StoreFullError for writing ``path`` where ``error`` says the disk is full; else
    ``error`` itself."""
    if isinstance(error, StoreFullError) or not disk_full(error):
        return error
    return StoreFullError(
        f"no space left on the device holding {path} ({free_space(path.parent)} free): {error}",
        path=str(path),
    )


def free_space(path: Path) -> str:
    """The space left on the device holding ``path``, in MiB, as text ("unknown" where it
    cannot be read)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return "unknown"
    return f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB"
