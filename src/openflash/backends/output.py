"""A worker's output: each line to this process's stdout or stderr, prefixed with its endpoint,
and told to whoever observes the runtime (a ``worker_output`` event: workers/events.py), so that
a dev server shows what a call printed."""

from __future__ import annotations

import asyncio
import collections
import sys
from typing import TextIO

from openflash.workers import events

__all__ = ["OUTPUT_LINE_LIMIT", "PUMP_GRACE_S", "STDERR_TAIL_LINES", "pump"]

STDERR_TAIL_LINES = 40
OUTPUT_LINE_LIMIT = 1 << 20  # a longer output line is replaced by a note saying so
PUMP_GRACE_S = 0.5


async def pump(
    stream: asyncio.StreamReader,
    out: TextIO,
    prefix: str,
    keep: collections.deque[str] | None,
    *,
    endpoint: str | None = None,
    pid: int | None = None,
) -> None:
    stream_name = "stderr" if out is sys.stderr else "stdout"
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line longer than the limit: asyncio dropped it
            raw = b"[openflash: a line longer than 1 MiB was dropped]\n"
        if not raw:
            return
        line = raw.decode(errors="replace").rstrip("\n")
        if keep is not None:
            keep.append(line)
        if endpoint is not None:
            events.emit("worker_output", endpoint=endpoint, pid=pid, stream=stream_name, line=line)
        try:
            out.write(f"{prefix}{line}\n")
            out.flush()
        except (OSError, ValueError):
            pass  # our own stdout is gone; keep draining so the worker never blocks
