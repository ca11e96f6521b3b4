"""How a worker's call ends when its caller cancels it (the CANCEL frame, workers/cancels.py).

An async function's task is cancelled: CancelledError at its next ``await``. A sync function
runs in a thread, which nothing can interrupt: its call waits for the thread to return before it
ends, so that the worker never takes a new call while a cancelled one still runs in it (the pool
kills the worker once the grace period has passed instead).

This module is part of the worker runtime: it imports the standard library only.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["in_thread"]


async def in_thread(future: asyncio.Future[Any]) -> Any:
    """The result of ``future`` (a function running in a thread); cancelled, it first waits for
    the thread to return, then raises CancelledError."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                continue
            except BaseException:
                break
        raise
