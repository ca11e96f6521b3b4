"""Progress of plain (not streaming) calls, seen from Python: ``openflash.on_progress``.

A function reports progress with ``openflash.progress(value)`` (or Runpod's
``runpod.serverless.progress_update(job, value)``). A streaming call's ``Stream`` has its own
``.progress`` and ``on_progress``; a plain call returns a coroutine, so its progress is watched
around it::

    with openflash.on_progress(print) as watch:      # the callback is optional
        result = await train(epochs=3)
    watch.progress                                    # the latest value (None: none yet)

Every call *started* inside the ``with`` block (``fn(...)`` evaluated there, awaited there or
later, in ``asyncio.gather`` or a task) reports to it, in the order the worker sent the values.
The callback runs on the event loop that entered the block (or, entered outside one, on the
runtime's). Blocks nest: an inner block's calls report to the outer one's too. An exception the
callback raises is logged and otherwise ignored: progress never fails a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from openflash.api.streams import progress_sink

__all__ = ["ProgressWatch", "on_progress"]

logger = logging.getLogger("openflash")


class ProgressWatch:
    """What ``on_progress`` watches: ``.progress`` is the latest value, ``.updates`` all."""

    def __init__(self, callback: Callable[[Any], None] | None) -> None:
        self.callback = callback
        #: The latest value a call in the block reported (None: none yet).
        self.progress: Any = None
        #: Every value, in the order they came.
        self.updates: list[Any] = []

    def _take(self, value: Any) -> None:
        self.progress = value
        self.updates.append(value)
        if self.callback is None:
            return
        try:
            self.callback(value)
        except Exception:
            logger.exception("openflash: the on_progress callback raised (the call goes on)")

    def __repr__(self) -> str:
        return f"<progress watch: {len(self.updates)} updates, latest {self.progress!r}>"


@contextlib.contextmanager
def on_progress(callback: Callable[[Any], None] | None = None) -> Iterator[ProgressWatch]:
    """Watch the progress of the calls started in this block (see the module's docstring)."""
    watch = ProgressWatch(callback)
    outer = progress_sink.get()
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None

    def sink(value: Any) -> None:  # called on the runtime's loop
        if outer is not None:
            outer(value)
        if loop is None or _running() is loop:
            watch._take(value)
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the caller's loop has just closed
                loop.call_soon_threadsafe(watch._take, value)

    token = progress_sink.set(sink)
    try:
        yield watch
    finally:
        progress_sink.reset(token)


def _running() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
