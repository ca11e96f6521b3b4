"""The one helper that runs a command: an argv list (never a shell), output captured.

Parsing what a tool printed is left to pure functions next to their callers, so that they can be
tested on saved outputs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openflash.errors import FlashError

TAIL_LINES = 30


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of ``text``."""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    check: bool = True,
    error: type[FlashError] = FlashError,
    hint: str | None = None,
) -> Completed:
    """Run ``argv`` and capture its output.

    With ``check`` (the default) a non-zero exit raises ``error`` naming the command and quoting
    the tail of its stderr. A missing program or a timeout always raises ``error``.
    """
    argv = tuple(str(a) for a in argv)
    shown = " ".join(argv[:3])
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as e:
        raise error(
            f"cannot run {argv[0]!r}: program not found",
            hint=hint or f"install {os.path.basename(argv[0])!r} or put it on PATH",
        ) from e
    except subprocess.TimeoutExpired as e:
        raise error(
            f"`{shown}` did not finish within {timeout:g} s and was stopped",
            hint=hint or "check the network or the machine's load, then try again",
        ) from e
    done = Completed(argv, proc.returncode, proc.stdout, proc.stderr)
    if check and not done.ok:
        raise error(
            f"`{shown}` failed with exit code {proc.returncode}:\n"
            f"{tail(proc.stderr or proc.stdout)}",
            hint=hint or error.hint or "read the command's output above",
        )
    return done
