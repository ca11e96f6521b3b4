"""A call's result as JSON bytes: encoded once, capped, kept and sent without copies.

A queue route's result is encoded to JSON once (``json_text``, then ``utf8``: the same rules
as every response, server/responses.py; the caller drops the value between the two, so that a
large result is held at most twice at any moment) and checked against
``FLASH_MAX_RESULT_BYTES`` (``too_large``); over it the call FAILS with a reason naming the
size, the cap and the setting. What stays of a large result is those bytes: the journal writes
them to a file of their own (server/job_journal.py), and ``respond`` sends a status body whose
``output`` is ``Encoded`` bytes or a ``Stored`` file as the body's head, then the bytes as they
are, a megabyte at a time, then the closing brace; so the server never holds a second copy of
them (no decoded value, no re-encoded text). ``Preview`` is what the dashboard keeps of a large
one.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.responses import Response, StreamingResponse

from openflash.server.responses import JSONBytes, JSONResponse, compact_json, finite

__all__ = [
    "INLINE_BYTES",
    "Encoded",
    "Preview",
    "Stored",
    "encode",
    "json_text",
    "preview",
    "respond",
    "too_large",
    "utf8",
]

#: Results up to this size stay in the journal's row and are answered as values; larger ones
#: are kept as bytes (in a file of their own, for a job) and sent as they are.
INLINE_BYTES = 64 * 1024
#: How much of a large result is sent (or read from its file) at a time.
CHUNK = 1 << 20


@dataclass(frozen=True)
class Encoded:
    """A result's JSON text, as UTF-8 bytes."""

    data: bytes

    def __repr__(self) -> str:  # never the whole of it in a log line
        return f"Encoded({len(self.data)} bytes)"


@dataclass(frozen=True)
class Stored:
    """A result's JSON text in a file (``size`` bytes), as the journal keeps a large one."""

    path: Path
    size: int


@dataclass(frozen=True)
class Preview:
    """What the dashboard keeps of a large result: its first bytes (as text) and its size."""

    head: str
    size: int


def encode(value: Any) -> Encoded:
    """``value`` (JSON-compatible data: server/invocation.py's ``to_json``) as JSON bytes."""
    return utf8(json_text(value))


def json_text(value: Any) -> str:
    """``value``'s JSON text; NaN and Infinity as null, as every response writes them."""
    try:
        return compact_json(value)
    except ValueError:
        return json.dumps(finite(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def utf8(text: str) -> Encoded:
    """JSON text as UTF-8; a lone surrogate (which UTF-8 cannot hold; only a string can have
    one) goes out as its ``\\udXXX`` escape, as ``json.dumps`` writes it by default."""
    return Encoded(text.encode("utf-8", "backslashreplace"))


def too_large(size: int, cap: int | None) -> str | None:
    """The reason a ``size``-byte result fails under ``cap`` (FLASH_MAX_RESULT_BYTES), or None."""
    if cap is None or size <= cap:
        return None
    return (
        f"the result is {size} bytes of JSON, more than FLASH_MAX_RESULT_BYTES={cap}; return less "
        "(write large data to a volume or object storage and return where it is), or raise "
        "FLASH_MAX_RESULT_BYTES"
    )


def preview(result: Encoded | Stored) -> Preview:
    """The first ``INLINE_BYTES`` of a large result, for the dashboard."""
    if isinstance(result, Encoded):
        head, size = result.data[:INLINE_BYTES], len(result.data)
    else:
        with result.path.open("rb") as f:
            head, size = f.read(INLINE_BYTES), result.size
    return Preview(head.decode(errors="ignore"), size)


def respond(
    body: dict[str, Any], status_code: int = 200, encoded: Encoded | None = None
) -> Response:
    """``body`` as a JSON response; an ``Encoded`` or ``Stored`` ``output`` is sent as it is,
    after the rest of the body (so ``output`` comes last). ``encoded``: a small ``output``'s
    JSON, already made (``call_outcome``'s), spliced in rather than made again where that gives
    the same bytes as ``JSONResponse`` (``output`` last, the JSON all ASCII: a body that UTF-8
    cannot hold is written as ASCII by responses.py, so a non-ASCII one is made again)."""
    output = body.get("output")
    if not isinstance(output, (Encoded, Stored)):
        spliced = _spliced(body, encoded) if encoded is not None else None
        if spliced is not None:
            return JSONBytes(spliced, status_code)
        return JSONResponse(body, status_code=status_code)
    rest = bytes(JSONResponse({k: v for k, v in body.items() if k != "output"}).body)
    head = rest[:-1] + (b',"output":' if len(rest) > 2 else b'"output":')
    parts: AsyncIterator[bytes | memoryview]
    if isinstance(output, Encoded):
        parts, size = _bytes(output.data), len(output.data)
    else:  # opened now: a removal by retention meanwhile does not cut the answer short
        fd = os.open(output.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        parts, size = _file(os.fdopen(fd, "rb"), output.size), output.size

    async def whole() -> AsyncIterator[bytes | memoryview]:
        yield head
        async for part in parts:
            yield part
        yield b"}"

    return StreamingResponse(
        whole(),
        status_code=status_code,
        media_type="application/json",
        headers={"content-length": str(len(head) + size + 1)},
    )


_COMPLETED = ("id", "status", "output")


def _spliced(body: dict[str, Any], output: Encoded) -> bytes | None:
    """``body``'s JSON with ``output`` as its last value's, or None where ``JSONResponse`` would
    write other bytes (``output`` not last, or JSON other than ASCII: see ``respond``)."""
    if not output.data.isascii() or next(reversed(body)) != "output":
        return None
    job_id = body.get("id")
    plain_id = type(job_id) is str and job_id.isalnum() and job_id.isascii()
    if plain_id and tuple(body) == _COMPLETED and body["status"] == "COMPLETED":
        # a /runsync answer (our own hex id): nothing in its head to escape
        return b'{"id":"%s","status":"COMPLETED","output":%s}' % (str(job_id).encode(), output.data)
    rest = json_text({k: v for k, v in body.items() if k != "output"})
    if not rest.isascii():
        return None
    return (
        rest[:-1].encode() + (b',"output":' if len(rest) > 2 else b'"output":') + output.data + b"}"
    )


async def _bytes(data: bytes) -> AsyncIterator[bytes | memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield view[start : start + CHUNK]


async def _file(f: Any, size: int) -> AsyncIterator[bytes | memoryview]:
    with f:
        left = size
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
            if not chunk:  # the file is shorter than the journal says: end the body short
                return
            left -= len(chunk)
            yield chunk
