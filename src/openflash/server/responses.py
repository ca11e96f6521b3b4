"""The JSON response of every route: one that can always be sent.

A function's output may hold what JSON text in UTF-8 cannot: a string with a lone surrogate (a
file name decoded with ``surrogateescape``, or an input echoed back), or NaN and Infinity (pandas
data). Rendering those would fail after the call succeeded; instead, lone surrogates go out as
``\\udXXX`` escapes (valid JSON, as ``json.dumps`` writes them by default) and NaN and Infinity as
``null`` (as pandas' ``to_json`` writes them).
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response

__all__ = ["JSONBytes", "JSONResponse", "compact_json", "crashed_response", "finite", "sse_event"]

_JSON_TYPE = (b"content-type", b"application/json")


#: ``json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))``, as
#: Starlette's ``JSONResponse`` renders, with its encoder made once rather than per call.
compact_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class JSONResponse(_StarletteJSON):
    def render(self, content: Any) -> bytes:
        try:
            return compact_json(content).encode("utf-8")  # Starlette's render, bytes for bytes
        except (UnicodeEncodeError, ValueError):
            return json.dumps(
                finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")
            ).encode("ascii")


class JSONBytes(Response):
    """A response whose body is JSON already encoded (bytes), with the head ``JSONResponse``
    gives it (``content-length``, then ``content-type: application/json``), made without
    Starlette's per-response header building (the hot routes' answers, server/results.py)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code, self.body, self.background = status_code, body, None
        self.raw_headers = [(b"content-length", b"%d" % len(body)), _JSON_TYPE]


def crashed_response(exc: Exception) -> JSONResponse:
    """The 500 of an exception no handler expected (app.py's handler, fast_path.py's)."""
    return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)


def sse_event(kind: str, data: Any) -> bytes:
    """A server-sent event ``kind`` whose data is ``data``'s JSON (one line, sendable as above)."""
    text = json.dumps(finite(data), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {text}\n\n".encode()


def finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
