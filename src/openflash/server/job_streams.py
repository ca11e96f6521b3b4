"""Streaming and progress over HTTP: a job's items and latest progress, as Runpod serves them.

A ``/run`` job of a generator function streams into a ``Feed`` (held in memory by this server):

    GET {base}/stream/{id}         -> {"id", "status", "stream": [{"output": item}, ...]}
                                      the items produced since the previous poll (Runpod's
                                      ``/stream/{id}``); once the job has ended, ``status`` is
                                      final and ``output`` (COMPLETED) is the aggregate list, as
                                      with Runpod's ``return_aggregate_stream``
    GET {base}/stream/{id}/events  -> server-sent events (``curl -N``, a browser's EventSource):
                                      ``event: item`` per item (``data``: its JSON), ``event:
                                      progress``, then ``event: end`` with the job's status

``runsync`` of a generator function answers with the aggregated list. Any function may call
``openflash.progress(value)``: ``/status/{id}`` then shows the latest value as ``progress`` (and,
while the job runs, as ``output``, where Runpod's ``progress_update`` puts it).

Memory: a feed holds its items only while they may still be asked for. Once a job has COMPLETED,
the journal holds the aggregate, so the feed lets go of its items at once (polls and events then
read the rest from the aggregate); a job that ended otherwise keeps the items made before its end
until they have all been read (a poll or the events' end). A server keeps the feeds of at most
``ENDED_FEEDS`` ended jobs (the oldest go first; polls of those read the journal, as for a job
of a previous server).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from starlette.responses import StreamingResponse

from openflash.api import streams
from openflash.server.invocation import to_json
from openflash.server.jobs import FINAL, JobRunner
from openflash.server.responses import JSONResponse, sse_event

__all__ = [
    "ENDED_FEEDS",
    "Feed",
    "Feeds",
    "add_stream_routes",
    "collect",
    "current_feed",
    "not_found",
    "with_progress",
]

#: How many ended jobs' feeds a server keeps (their progress, and items not yet read).
ENDED_FEEDS = 1000


class Feed:
    """One job's items (as JSON data) and latest progress; waiters wake at each change.

    Positions are absolute (the n-th item the job made): ``items`` holds those from ``base`` on.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.base = 0
        self.polled = 0
        self.progress: Any = None
        self.ended = False
        self.completed = False
        self.changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._wake()

    def report(self, value: Any) -> None:
        self.progress = to_json(value)
        self._wake()

    def since(self, start: int, aggregate: Any) -> list[Any]:
        """The items from position ``start`` on (released ones from the job's ``aggregate``;
        none while that is not yet in the journal)."""
        if start >= self.base:
            return self.items[start - self.base :]
        if not isinstance(aggregate, list):
            return []
        return aggregate[start : self.base] + self.items

    @property
    def total(self) -> int:
        return self.base + len(self.items)

    def finish(self, completed: bool) -> None:
        """The job's call has ended; a completed job's items are in the journal's aggregate."""
        self.ended, self.completed = True, completed
        if completed:
            self.release()
        self._wake()

    def release(self) -> None:
        """Let go of the items (once they can be read elsewhere, or have all been read)."""
        self.base, self.items = self.total, []

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


#: The feed of the job the running code serves (a ``/run`` job sets it; ``runsync`` does not).
current_feed: contextvars.ContextVar[Feed | None] = contextvars.ContextVar(
    "openflash_feed", default=None
)


class Feeds(dict[str, Feed]):
    """The feeds of this server's jobs, by job id, at most ``ENDED_FEEDS`` of ended jobs."""

    def __setitem__(self, job_id: str, feed: Feed) -> None:
        super().__setitem__(job_id, feed)
        ended = [key for key, kept in self.items() if kept.ended]
        for key in ended[: max(len(ended) - ENDED_FEEDS, 0)]:  # the oldest first
            del self[key]


async def collect(result: Any) -> Any:
    """A call's value for HTTP: a Stream's items, each added to the job's feed, as a list."""
    if not isinstance(result, streams.Stream):
        return await result
    feed = current_feed.get()
    if feed is not None:
        result.on_progress = feed.report
    items = []
    completed = False
    try:
        async with result:
            async for item in result:
                items.append(item)
                if feed is not None:
                    feed.add(to_json(item))
        completed = True
    finally:
        if feed is not None:
            feed.finish(completed)
    return items


def with_progress(body: dict[str, Any], feed: Feed | None) -> dict[str, Any]:
    """A job's status body with its latest progress, where it reported one."""
    if feed is not None and feed.progress is not None:
        body["progress"] = feed.progress
        if body.get("status") == "IN_PROGRESS":
            body["output"] = feed.progress
    return body


def not_found(jobs: JobRunner, job_id: str, route_path: str, base: str) -> JSONResponse:
    """The 404 for a job this route does not have: expired (removed past FLASH_JOB_TTL), or
    never known."""
    expired = jobs.expired(job_id, route_path, base)
    if expired is not None:
        return JSONResponse(expired, status_code=404)
    return JSONResponse({"error": f"no job {job_id!r} on {base}"}, status_code=404)


def add_stream_routes(
    router: APIRouter, base: str, route_path: str, jobs: JobRunner, feeds: Feeds
) -> None:
    """``{base}/stream/{id}`` and ``{base}/stream/{id}/events`` for the jobs of ``route_path``."""

    def find(job_id: str) -> tuple[Any, Feed | None] | JSONResponse:
        job = jobs.get(job_id)
        if job is None or job.route != route_path:
            return not_found(jobs, job_id, route_path, base)
        return job, feeds.get(job_id)

    async def stream(job_id: str) -> JSONResponse:
        found = find(job_id)
        if isinstance(found, JSONResponse):
            return found
        job, feed = found
        items: list[Any] = []
        if feed is not None:
            items = feed.since(feed.polled, job.output)
            feed.polled += len(items)
            if feed.ended and job.status in FINAL:
                feed.release()  # all read
        elif job.status == "COMPLETED" and isinstance(job.output, list):
            items = job.output  # a job of a previous server: its aggregate is all there is
        body = job.to_response()
        body["stream"] = [{"output": item} for item in items]
        return JSONResponse(with_progress(body, feed))

    async def events(job_id: str) -> Any:
        found = find(job_id)
        if isinstance(found, JSONResponse):
            return found
        return StreamingResponse(
            _events(jobs, job_id, found[1]),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    router.add_api_route(
        f"{base}/stream/{{job_id}}",
        stream,
        methods=["GET"],
        name=f"{base}/stream",
        summary="the job's items since the last poll",
    )
    router.add_api_route(
        f"{base}/stream/{{job_id}}/events",
        events,
        methods=["GET"],
        name=f"{base}/events",
        summary="the job's items as server-sent events",
    )


async def _events(jobs: JobRunner, job_id: str, feed: Feed | None) -> AsyncIterator[bytes]:
    sent, progress = 0, None
    while True:
        job = jobs.get(job_id)
        if job is None:
            return
        changed = feed.changed if feed is not None else None
        if feed is not None:
            fresh = feed.since(sent, job.output)
            sent += len(fresh)
        else:
            done = job.output if job.status in FINAL and isinstance(job.output, list) else []
            fresh, sent = done[sent:], max(len(done), sent)
        for item in fresh:
            yield sse_event("item", item)
        if feed is not None and feed.progress is not None and feed.progress != progress:
            progress = feed.progress
            yield sse_event("progress", progress)
        if job.status in FINAL:
            if feed is not None and feed.ended:
                feed.release()  # all read
            end = {"status": job.status} | ({"error": job.error} if job.error else {})
            yield sse_event("end", end)
            return
        if changed is not None:
            with contextlib.suppress(asyncio.TimeoutError):  # the job's end wakes no one here
                await asyncio.wait_for(changed.wait(), 1.0)
        else:
            await asyncio.sleep(0.2)
