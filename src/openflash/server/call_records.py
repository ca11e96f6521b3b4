"""What the dashboard shows of calls: each recent call's detail, and what workers printed.

``CallRecords`` keeps the last calls by id, as ``routes.py`` records them (route, endpoint,
kind, status, input, output or error, when it started and ended, its worker's pid and how long it
waited for one); a /run job's own fields (attempts, timings) come from the journal when asked.
``WorkerOutput`` keeps each endpoint's last lines of worker output (``worker_output`` events from
backends/output.py), each with its time and worker pid: the endpoint's log tail, and a call's
own output (its worker's lines from its start to just after its end).

``detail`` is what ``GET /_flash/calls/{id}`` answers: values cut to a size a page can hold, the
error split into its first line, the remote traceback with the user's frames first (openflash's
own frames after them, apart), and the hint. ``version`` grows with every change, so that the
live feed (app.py, ``/_flash/live``) sends a new picture only when there is one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from openflash.server import results
from openflash.workers import events

__all__ = [
    "CallRecords",
    "Later",
    "WorkerOutput",
    "call_fields",
    "shown",
    "split_error",
    "user_frames_first",
]

#: The most of an input or output the page is sent (the rest is counted, not shown).
SHOWN_BYTES = 64 * 1024
#: Lines that may still arrive after a call ended (the output pipe is not the result's socket).
OUTPUT_GRACE_S = 0.5
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+')
#: Frames of openflash's own runtime and of the machinery that calls user code (importing a
#: file, unpickling a function), which a user does not need to read first.
_OWN_FRAMES = re.compile(r"[/\\](openflash|runpod_flash|cloudpickle|importlib)[/\\]|<frozen ")


class Later:
    """A call's field made only when the dashboard reads the call (``CallRecords.get`` and
    ``newest_first``), once: ``make()``'s value (a failure: its text), e.g. a ``/runsync``
    input's JSON form, which most calls' records never need before they are dropped."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make

    def value(self) -> Any:
        try:
            return self.make()
        except Exception as e:  # the page shows what went wrong, never fails for it
            return f"<cannot be shown: {type(e).__name__}: {e}>"


def _made(call: dict[str, Any]) -> dict[str, Any]:
    """``call`` with its ``Later`` fields made (in place, so once), as a copy."""
    for key, value in call.items():
        if isinstance(value, Later):
            call[key] = value.value()
    return dict(call)


class CallRecords:
    """The last ``limit`` calls by id, in the order they came; safe across threads. A field
    may be ``Later``: made when first read."""

    def __init__(self, limit: int = 200) -> None:
        self._calls: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()
        self.version = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def _changed(self) -> None:
        """Count a change and wake whoever waits for one (called with the lock held)."""
        self.version += 1
        for loop, event in self._waiters:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits there
                loop.call_soon_threadsafe(event.set)

    async def changes(self, since: int, timeout: float) -> int:
        """Wait until ``version`` passes ``since`` or ``timeout`` seconds pass; the version."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            if self.version != since:
                return self.version
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(waiter)
        return self.version

    def add(self, call: dict[str, Any]) -> None:
        with self._lock:
            self._calls[str(call["id"])] = {"time": time.time(), **call}
            while len(self._calls) > self._limit:
                self._calls.popitem(last=False)
            self._changed()

    def update(self, call_id: str, **fields: Any) -> None:
        """More of a call's fields (a job's worker and error, once it ends)."""
        with self._lock:
            call = self._calls.get(call_id)
            if call is not None:
                call.update({k: v for k, v in fields.items() if v is not None})
                self._changed()

    def touch(self) -> None:
        """Something the dashboard shows changed elsewhere (an event, a build, a worker)."""
        with self._lock:
            self._changed()

    def get(self, call_id: str) -> dict[str, Any] | None:
        with self._lock:
            call = self._calls.get(call_id)
            return _made(call) if call is not None else None

    def newest_first(self) -> list[dict[str, Any]]:
        with self._lock:
            return [_made(c) for c in reversed(self._calls.values())]


class WorkerOutput:
    """Each endpoint's last ``limit`` lines of worker output, with their time and pid."""

    def __init__(self, limit: int = 1000) -> None:
        self._lines: dict[str, collections.deque[tuple[float, int | None, str, str]]] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, endpoint: str, pid: int | None, stream: str, line: str) -> None:
        with self._lock:
            lines = self._lines.get(endpoint)
            if lines is None:
                lines = self._lines[endpoint] = collections.deque(maxlen=self._limit)
            lines.append((time.time(), pid, stream, line))

    def tail(self, endpoint: str, count: int = 50) -> list[dict[str, Any]]:
        """The endpoint's last ``count`` lines, oldest first."""
        with self._lock:
            lines = list(self._lines.get(endpoint, ()))[-count:]
        return [{"time": t, "pid": p, "stream": s, "line": text} for t, p, s, text in lines]

    def during(
        self, endpoint: str, pid: int | None, started: float, ended: float | None
    ) -> list[dict[str, Any]]:
        """What worker ``pid`` printed from ``started`` to just after ``ended`` (or now)."""
        until = (ended if ended is not None else time.time()) + OUTPUT_GRACE_S
        with self._lock:
            lines = list(self._lines.get(endpoint, ()))
        return [
            {"time": t, "pid": p, "stream": s, "line": text}
            for t, p, s, text in lines
            if p == pid and started <= t <= until
        ]


def call_fields(given: Any, started: float, output: Any, error: str | None) -> dict[str, Any]:
    """What a call's detail shows beyond its row: its input, its output or error, when it
    started and ended, and (from the current request's note) its worker and queue wait."""
    note = events.call_note.get() or {}
    fields = {
        "input": given,
        "started": started,
        "ended": time.time(),
        "worker_pid": note.get("worker_pid"),
        "queue_wait": note.get("queue_wait"),
    }
    if error is not None:
        fields["error"] = error
    else:
        fields["output"] = output
    return fields


def shown(value: Any) -> dict[str, Any]:
    """A value as the page shows it: its JSON (cut to ``SHOWN_BYTES``) and its full size; a
    large result's ``results.Preview`` as its first bytes and size."""
    if isinstance(value, results.Preview):
        return {"json": value.head[:SHOWN_BYTES], "bytes": value.size, "cut": True}
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    size = len(text.encode())
    cut = size > SHOWN_BYTES
    return {
        "json": text.encode()[:SHOWN_BYTES].decode(errors="ignore") if cut else text,
        "bytes": size,
        "cut": cut,
    }


def split_error(text: str | None) -> dict[str, Any] | None:
    """An error's text (as ``RemoteError`` and ``FlashError`` print) in its parts: the first
    line, the rest of the message, the remote traceback (user's frames first) and the hint."""
    if not text:
        return None
    body, _, hint = text.partition("\nHint: ")
    if not hint:
        body, _, hint = text.partition("\nhint: ")
    message, _, traceback = body.partition("\n\nRemote traceback:\n")
    first, _, rest = message.strip().partition("\n")
    user, own = user_frames_first(traceback)
    return {
        "message": first,
        "more": rest.strip(),
        "traceback": user,
        "openflash_frames": own,
        "hint": hint.strip(),
    }


def user_frames_first(traceback: str) -> tuple[str, str]:
    """A traceback's text with openflash's own frames taken out, and those frames apart.

    The header line and the exception's last lines stay where they are; every frame (its
    ``File`` line and the source lines under it) in openflash, runpod_flash, cloudpickle or
    importlib moves
    to the second text, so the first reads from the user's outermost frame to the error."""
    user: list[str] = []
    own: list[str] = []
    into = user
    for line in traceback.splitlines():
        match = _FRAME.match(line)
        if match:
            into = own if _OWN_FRAMES.search(match["file"]) else user
        elif not line.startswith("    "):
            into = user  # the header, the exception line, a chained traceback's text
        into.append(line)
    return "\n".join(user), "\n".join(own)
