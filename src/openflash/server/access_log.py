"""``flash run``'s terminal log: one line per call, and the runtime's builds, workers and reloads.

A call's line is uvicorn's access line (client, request line, HTTP status) followed by what
openflash knows of it: the endpoint, the call's status, its duration, the job id and the pid of
the worker it ran on; a failed call adds its error's first line and its hint. A ``/run`` job
logs its request (IN_QUEUE) and, when it ends, a ``job`` line. ``--log-format json`` writes one
JSON object a line with the same fields. The dashboard's polling (``/_flash/``), health probes
and scrapes of ``/metrics`` are not logged.

The middleware is a plain ASGI one, so the route's handler runs in its task: the handler's
``record`` and the pool's ``events.note`` fill the request's note (workers/events.py).
"""

from __future__ import annotations

import datetime
import http
import json
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TextIO

from openflash import _subprocess
from openflash.server.responses import crashed_response
from openflash.workers import events

__all__ = ["AccessLog", "CallLog", "error_summary", "escaped", "quiet_path", "request_fields"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORMATS = ("text", "json")
_KEEP_BODY = 65536  # a failed response's body is read for its error up to this size
_QUIET_PREFIXES = ("/_flash/", "/favicon.ico", "/health", "/ping", "/metrics")
_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}
_SAID_MOST = 1024  # request lines (method, path, status) whose text is kept made


def error_summary(error: str | None) -> tuple[str, str]:
    """An error text's first line and its hint (``Hint: ...``), either possibly empty."""
    if not error:
        return "", ""
    lines = [line.strip() for line in error.strip().splitlines()]
    hints = [line[5:].strip() for line in lines if line.lower().startswith("hint:")]
    return (lines[0] if lines else ""), (hints[-1] if hints else "")


class CallLog:
    """Writes the log's lines to ``out`` (stderr by default) as text or JSON."""

    def __init__(self, fmt: str = "text", out: TextIO | None = None, quiet: bool = False) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
        self.fmt, self.out, self.quiet = fmt, out, quiet
        self._lock = threading.Lock()
        self._stamp = (0, "")  # the last second's time of day, written once a second
        #: (method, path, HTTP status) -> the call line's level and request part, made once
        self._said: dict[tuple[str, str, int], tuple[str, str]] = {}

    def _time_of_day(self, now: float) -> str:
        second = int(now)
        if self._stamp[0] != second:
            self._stamp = (second, datetime.datetime.fromtimestamp(second).strftime("%H:%M:%S"))
        return self._stamp[1]

    def write(self, event: str, level: str, text: str, fields: dict[str, Any]) -> None:
        if self.quiet:
            return
        now = time.time()
        if self.fmt == "json":
            record = {"time": round(now, 3), "level": level.lower(), "event": event, **fields}
            line = json.dumps({k: v for k, v in record.items() if v is not None}, default=str)
        else:  # a terminal: nothing in it may move the cursor, recolour or retitle it
            line = f"{self._time_of_day(now)} {level + ':':<9} {escaped(text, newlines=True)}"
        out = self.out or sys.stderr
        with self._lock:
            out.write(line + "\n")
            out.flush()

    def call(self, fields: dict[str, Any]) -> None:
        """One call: ``fields`` holds client, method, path, http_status, seconds and the note."""
        code = int(fields.get("http_status") or 0)
        key = (str(fields["method"]), str(fields["path"]), code)
        said = self._said.get(key)
        if said is None:
            level = "ERROR" if code >= 500 else "WARNING" if code >= 400 else "INFO"
            phrase = _PHRASES.get(code, "")
            request = " ".join(escaped(part) for part in key[:2])  # as the client sent it
            said = (level, f'"{request} HTTP/1.1" ' + f"{code} {phrase}".rstrip())
            if len(self._said) < _SAID_MOST:
                self._said[key] = said
        level, request = said
        text = f"{escaped(str(fields.get('client') or '-'))} - {request}" + _details(fields)
        self.write("call", level, text, fields)

    def job(self, fields: dict[str, Any]) -> None:
        """A ``/run`` job that ended: id, route, endpoint, status, seconds, worker pid, error."""
        level = "INFO" if fields.get("status") == "COMPLETED" else "ERROR"
        details = _details({k: v for k, v in fields.items() if k != "job_id"})
        text = f"job {fields.get('job_id')} on {fields.get('route')}" + details
        self.write("job", level, text, fields)

    def runtime_event(self, kind: str, fields: dict[str, Any]) -> None:
        """A build, a worker's start or exit (workers/events.py's kinds)."""
        if kind == "build_started":
            self.write(kind, "INFO", f"build started: {fields['what']}", fields)
        elif kind == "build_finished":
            seconds = fields.get("seconds") or 0.0
            if fields.get("ok"):
                self.write(kind, "INFO", f"build done in {seconds:.1f}s: {fields['what']}", fields)
            elif not _subprocess.stopping():  # a stop said what it stopped, in one line
                first, hint = error_summary(fields.get("error"))
                text = f"build failed after {seconds:.1f}s: {fields['what']}\n    error: {first}"
                self.write(kind, "ERROR", text + (f"\n    hint: {hint}" if hint else ""), fields)
        elif kind == "build_step":
            level = "WARNING" if fields.get("announce") else "INFO"
            self.write(kind, level, f"build {fields['what']}: {fields['step']}", fields)
        elif kind == "worker_started":
            self.write(
                kind, "INFO", f"worker started: {fields['endpoint']} pid {fields['pid']}", fields
            )
        elif kind == "worker_exited":
            crashed = bool(fields.get("crashed"))
            what = "worker crashed" if crashed else "worker exited"
            text = f"{what}: {fields['endpoint']} pid {fields['pid']} ({fields.get('exit')})"
            self.write(kind, "ERROR" if crashed else "INFO", text, fields)

    def message(self, text: str, level: str = "info") -> None:
        """The server's own messages (serving, reloaded, import failures)."""
        self.write("server", level.upper(), text, {"message": text})


#: Characters a terminal acts on (C0 and C1 controls, DEL) or that reorder text (bidi controls).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escaped(text: str, *, newlines: bool = False) -> str:
    """``text`` with control characters written as escapes (``\\x1b``), so that a name, a path or
    an error never reaches a terminal raw; ``newlines`` keeps line breaks (a message's own)."""
    if text.isascii() and text.isprintable():  # the common case, checked in C: nothing to do
        return text

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if newlines and char == "\n":
            return char
        return repr(char)[1:-1] if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return _CONTROL.sub(escape, text)


def _details(fields: dict[str, Any]) -> str:
    parts = []
    if fields.get("endpoint"):
        parts.append(f"endpoint={fields['endpoint']}")
    if fields.get("status"):
        parts.append(f"status={fields['status']}")
    if fields.get("seconds") is not None:
        parts.append(f"{fields['seconds']:.3f}s")
    if fields.get("job_id"):
        parts.append(f"job={fields['job_id']}")
    if fields.get("worker_pid"):
        parts.append(f"pid={fields['worker_pid']}")
    text = ("  " + " ".join(parts)) if parts else ""
    if fields.get("error"):
        text += f"\n    error: {fields['error']}"
    if fields.get("hint"):
        text += f"\n    hint: {fields['hint']}"
    return text


class AccessLog:
    """ASGI middleware: ``report``s each HTTP call with its note once its response is sent."""

    def __init__(self, app: ASGIApp, report: Callable[[dict[str, Any]], None]) -> None:
        self.app, self.report = app, report

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(_QUIET_PREFIXES):
            await self.app(scope, receive, send)
            return
        note: dict[str, Any] = {}
        token = events.call_note.set(note)
        started = time.perf_counter()
        response: dict[str, Any] = {"status": 0, "body": b""}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
            elif message["type"] == "http.response.body" and response["status"] >= 400:
                response["body"] = (response["body"] + message.get("body", b""))[:_KEEP_BODY]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as e:
            if not response["status"]:  # the 500 app.py's handler sends outside: its error
                body = crashed_response(e).body
                response["status"], response["body"] = 500, bytes(body)[:_KEEP_BODY]
            raise
        except BaseException:
            response["status"] = response["status"] or 500
            raise
        finally:
            events.call_note.reset(token)
            self.report(request_fields(scope, note, response, time.perf_counter() - started))


def quiet_path(path: str) -> bool:
    """Whether requests to ``path`` go unlogged (the dashboard's polling, probes, scrapes)."""
    return path.startswith(_QUIET_PREFIXES)


def request_fields(
    scope: Scope, note: dict[str, Any], response: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """A call's fields for ``report``: ``response`` holds its HTTP ``status`` and, from a
    refusal or a failure (400 and over), the start of its ``body``, whose ``error`` is logged."""
    client = scope.get("client")
    fields: dict[str, Any] = {
        "client": f"{client[0]}:{client[1]}" if client else None,
        "method": scope.get("method", ""),
        "path": scope.get("path", ""),
        "http_status": response["status"],
        "seconds": seconds,
        "endpoint": note.get("endpoint"),
        "status": note.get("status"),
        "job_id": note.get("id"),
        "worker_pid": note.get("worker_pid"),
        "queue_wait": note.get("queue_wait"),
    }
    if response["status"] >= 400 and response["body"]:
        try:
            body = json.loads(response["body"])
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, str):
            fields["error"], fields["hint"] = error_summary(error)
    return fields
