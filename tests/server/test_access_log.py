"""The terminal log's call lines (server/access_log.py's ``CallLog.call``): the same text for the
same request whichever path answered, and from the request part made once per method, path and
status (each line below was written by the log before that part was kept made)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from openflash.server.access_log import CallLog, request_fields

NOTE = {
    "endpoint": "echo-ep",
    "status": "COMPLETED",
    "id": "0f3bd712b5f74929ba0e39ad5680b3f1",
    "worker_pid": 4242,
    "queue_wait": 0.001,
}


def _fields(
    method: str,
    path: str,
    status: int,
    body: bytes = b"",
    note: dict[str, Any] | None = None,
    client: tuple[str, int] | None = ("127.0.0.1", 5555),
    seconds: float | None = 0.0123,
) -> dict[str, Any]:
    scope: dict[str, Any] = {"method": method, "path": path}
    if client is not None:
        scope["client"] = client
    return request_fields(scope, note or {}, {"status": status, "body": body}, seconds)  # type: ignore[arg-type]


def _lines(log: CallLog, out: io.StringIO) -> list[str]:
    return [re.sub(r"^\d\d:\d\d:\d\d ", "HH:MM:SS ", line) for line in out.getvalue().splitlines()]


def test_call_lines_are_written_as_before() -> None:
    out = io.StringIO()
    log = CallLog("text", out=out)
    refused = json.dumps({"error": "the request does not match\nHint: send x"}).encode()
    for fields in (
        _fields("POST", "/echo/runsync", 200, note=NOTE),
        _fields("POST", "/echo/runsync", 200, note=NOTE),  # the request part kept: the same
        _fields("POST", "/echo/runsync", 422, refused),
        _fields(
            "POST",
            "/echo/runsync",
            500,
            b'{"error": "RuntimeError: boom"}',
            {"endpoint": "echo-ep"},
        ),
        _fields("GET", "/odd\x1bpath/\u202e", 404, client=None),
        _fields("BREW", "/pot", 599, seconds=None),
    ):
        log.call(fields)
    assert _lines(log, out) == [
        'HH:MM:SS INFO:     127.0.0.1:5555 - "POST /echo/runsync HTTP/1.1" 200 OK  endpoint=echo-ep status=COMPLETED 0.012s job=0f3bd712b5f74929ba0e39ad5680b3f1 pid=4242',
        'HH:MM:SS INFO:     127.0.0.1:5555 - "POST /echo/runsync HTTP/1.1" 200 OK  endpoint=echo-ep status=COMPLETED 0.012s job=0f3bd712b5f74929ba0e39ad5680b3f1 pid=4242',
        'HH:MM:SS WARNING:  127.0.0.1:5555 - "POST /echo/runsync HTTP/1.1" 422 Unprocessable Entity  0.012s',
        "    error: the request does not match",
        "    hint: send x",
        'HH:MM:SS ERROR:    127.0.0.1:5555 - "POST /echo/runsync HTTP/1.1" 500 Internal Server Error  endpoint=echo-ep 0.012s',
        "    error: RuntimeError: boom",
        'HH:MM:SS WARNING:  - - "GET /odd\\x1bpath/\\u202e HTTP/1.1" 404 Not Found  0.012s',
        'HH:MM:SS ERROR:    127.0.0.1:5555 - "BREW /pot HTTP/1.1" 599',
    ]  # fmt: skip


def test_many_paths_are_each_logged_as_sent() -> None:
    """More distinct request lines than are kept made: each line still names its own path and
    status (the kept ones do not grow without bound, nor answer for another path)."""
    out = io.StringIO()
    log = CallLog("text", out=out)
    for i in range(1500):
        log.call(_fields("GET", f"/p/{i}", 404 if i % 2 else 200))
    log.call(_fields("GET", "/p/3", 200))  # kept made as a 404: this one is a 200
    lines = _lines(log, out)
    assert len(lines) == 1501
    for i, line in enumerate(lines[:-1]):
        status = "404 Not Found" if i % 2 else "200 OK"
        assert f'"GET /p/{i} HTTP/1.1" {status}  0.012s' in line, line
    assert lines[-1].startswith('HH:MM:SS INFO:     127.0.0.1:5555 - "GET /p/3 HTTP/1.1" 200 OK ')
