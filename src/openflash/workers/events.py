"""What happens in a runtime that a server reports: builds, workers starting and exiting, and
the worker a call ran on.

``subscribe`` registers an observer, called with ``(kind, fields)`` for each ``emit``, on
whichever thread emits (a build's thread, the pools' loop); an observer that raises is logged
and otherwise ignored, so reporting never breaks a call. Kinds: ``build_started``,
``build_step`` (resolving, downloading, ...: prepare/build_progress.py) and ``build_finished``
(prepare/preparer.py), ``worker_started`` and ``worker_exited``
(workers/lifecycle.py, workers/pool.py), ``worker_output`` (a line a local worker printed, with its
endpoint, pid and stream: backends/output.py).

``note`` adds fields to the current call's note, a dict an HTTP request puts in ``call_note``
(server/access_log.py); the pool notes the worker's pid and how long the call waited there.

``call_taken`` is what a task that makes calls wants done when a worker takes one (sent, no
longer queued): a journaled job becomes IN_PROGRESS then, not when it was accepted.
``call_handed_back`` is what it wants done when a pool gives back a call no worker took (the
pool was replaced by a reload, or stopped: workers/handover.py): a journaled job is then sent to
the next pool, or left queued for the next server, instead of failing.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

__all__ = [
    "Observer",
    "call_handed_back",
    "call_note",
    "call_taken",
    "emit",
    "note",
    "subscribe",
    "taken",
]

logger = logging.getLogger("openflash")

Observer = Callable[[str, dict[str, Any]], None]

_observers: list[Observer] = []

#: The note of the call the current task serves, if a server keeps one.
call_note: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "openflash_call_note", default=None
)

#: Called (on the pool's loop) each time a call the current task makes is taken by a worker.
call_taken: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "openflash_call_taken", default=None
)

#: Called (on the pool's loop) when a pool gives back a queued call the current task made: no
#: worker took it, and the call then fails with a FlashError saying why.
call_handed_back: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "openflash_call_handed_back", default=None
)


def subscribe(observer: Observer) -> Callable[[], None]:
    """Call ``observer`` for each event from now on; returns what unsubscribes it."""
    _observers.append(observer)

    def unsubscribe() -> None:
        if observer in _observers:
            _observers.remove(observer)

    return unsubscribe


def emit(kind: str, **fields: Any) -> None:
    for observer in list(_observers):
        try:
            observer(kind, fields)
        except Exception:
            logger.debug("openflash: an observer of %s failed", kind, exc_info=True)


def note(**fields: Any) -> None:
    """Add ``fields`` to the current call's note (nothing when no server keeps one)."""
    current = call_note.get()
    if current is not None:
        current.update(fields)


def taken(hook: Callable[[], None] | None) -> None:
    """Run a call's ``call_taken`` (or ``call_handed_back``) hook; one that raises is logged,
    never breaks the call."""
    if hook is None:
        return
    try:
        hook()
    except Exception:
        logger.warning("openflash: recording that a worker took a call failed", exc_info=True)
