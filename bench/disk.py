"""Counting disk the way the kernel does: blocks, with hardlinked files counted once."""

from __future__ import annotations

import subprocess
from pathlib import Path


def blocks(*paths: Path) -> int:
    """Bytes of the blocks under ``paths`` together; a file linked from several counts once."""
    done = subprocess.run(
        ["du", "-sB1", "--total", *map(str, paths)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.splitlines()[-1].split()[0])
