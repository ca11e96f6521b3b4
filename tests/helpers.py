"""Helpers for tests that run user programs as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def run_python(
    script: Path,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``python script`` as a user would, with FLASH_* taken from this test's environment."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd or script.parent,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
