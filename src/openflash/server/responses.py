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

__all__ = ["JSONResponse", "finite", "sse_event"]


class JSONResponse(_StarletteJSON):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (UnicodeEncodeError, ValueError):
            return json.dumps(
                finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")
            ).encode("ascii")


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
