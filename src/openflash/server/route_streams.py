"""A route-style handler that is a generator function, served as server-sent events.

``@api.get("/tokens")`` on a generator function answers ``text/event-stream``, in the shape of a
job's ``/stream/{id}/events``: ``event: item`` per item (``data``: its JSON) as the worker yields
it, ``event: progress`` for each ``openflash.progress`` value, then ``event: end`` with
``{"status": "COMPLETED"}``, or ``{"status": "FAILED", "error": ...}`` when the function raised
after its first item. An error before the first item answers as a plain call's would (422, 500,
504 with ``{"detail": ...}``), since no status has been sent yet. A client that disconnects stops
the generator in the worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import Response, StreamingResponse

from openflash.api.streams import Stream
from openflash.server.invocation import to_json
from openflash.server.responses import JSONResponse, sse_event

__all__ = ["respond"]

#: What a call's exception answers over HTTP: (status code, body).
Failure = Callable[[Exception], tuple[int, Any]]
_NOTHING = object()


async def respond(stream: Stream, failure: Failure, done: Callable[[str], None]) -> Response:
    """The response for ``stream``: its events, or the error it raised before its first item.

    ``done`` is called with the call's final status (COMPLETED or FAILED) once it has ended.
    """
    progress: list[Any] = []
    stream.on_progress = lambda value: progress.append(to_json(value))
    try:
        first = await anext(stream, _NOTHING)
    except Exception as e:
        await stream.aclose()
        done("FAILED")
        status_code, body = failure(e)
        return JSONResponse(body, status_code=status_code)
    return StreamingResponse(
        _events(stream, first, progress, failure, done),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    stream: Stream, first: Any, progress: list[Any], failure: Failure, done: Callable[[str], None]
) -> AsyncIterator[bytes]:
    status = "FAILED"  # until it ends well (a client gone mid-stream leaves it so)
    try:
        item = first
        while True:
            for value in progress:
                yield sse_event("progress", value)
            progress.clear()
            if item is _NOTHING:
                break
            yield sse_event("item", to_json(item))
            try:
                item = await anext(stream, _NOTHING)
            except Exception as e:
                yield sse_event("end", {"status": "FAILED", "error": failure(e)[1]["detail"]})
                return
        status = "COMPLETED"
        yield sse_event("end", {"status": status})
    finally:
        await stream.aclose()  # a client gone early: the worker's generator is closed
        done(status)
