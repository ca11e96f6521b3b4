"""An endpoint's ``/health``, ``/purge-queue`` and ``/retry``, in the shapes of Runpod's
serverless API.

    GET  {base}/health       -> {"jobs": {"completed", "failed", "inProgress", "inQueue",
                                          "retried"},
                                 "workers": {"idle", "initializing", "ready", "running",
                                             "throttled", "unhealthy"}}
    POST {base}/purge-queue  -> {"removed": <jobs cancelled before they started>,
                                 "status": "completed"}
    POST {base}/retry/{id}   -> {"id", "status": "IN_QUEUE"}: a FAILED, TIMED_OUT or CANCELLED
                                job runs again under its id (another job answers its status
                                unchanged, with a 409)

Runpod's API answers these per endpoint (``https://api.runpod.ai/v2/{id}/health``; the runpod
SDK's ``Endpoint.health()`` and ``purge_queue()`` call them). Here ``jobs`` counts the route's
calls since its journal began: ``/run`` jobs from the journal (until FLASH_JOB_TTL removes
them), ``/runsync`` calls since the server started (``SyncCalls``); ``failed`` includes timed-out
jobs, ``retried`` the jobs that were started more than once. ``workers`` are the endpoint's
workers now (shared by every route of the endpoint): ``initializing`` ones are starting,
``ready`` ones can take calls, of which ``running`` ones run at least one and ``idle`` ones none.
``throttled`` and ``unhealthy`` are Runpod's cloud states: always 0 here (a crashed worker is
replaced, never left unhealthy).

They are plumbing of Runpod's API (its SDK and clients call them), not the endpoint's own
operations: ``/docs`` does not list them.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from openflash import _settings
from openflash.project import Project, QueueRoute
from openflash.runtime.process import get_runtime
from openflash.server import heap, results
from openflash.server.job_streams import not_found
from openflash.server.jobs import JobRunner
from openflash.server.responses import JSONResponse

__all__ = ["SyncCalls", "add_health_routes", "health_body", "id_bases"]


class SyncCalls:
    """What each queue route's ``/runsync`` calls leave behind (they are not journaled, as
    ``/run`` jobs are): their outcomes counted since the server started, for ``/health``, and
    their answers kept ``KEEP_S`` seconds (Runpod keeps a runsync result a minute), so that
    ``/status/{id}`` answers them too, as Runpod's API does.

    Kept answers are bounded: at most ``MOST`` of them and ``budget`` bytes of their JSON in
    all (FLASH_RUNSYNC_KEEP_BYTES, 64 MiB by default, read when made; the oldest dropped first;
    one larger than the budget is not kept), and each is dropped
    on a timer when its ``KEEP_S`` have passed, not only at the next call; their memory goes
    back to the OS (``heap.give_back``) once ``TRIM_AFTER`` bytes of them have been dropped
    (not at each small one: a trim walks the whole heap, and a busy server drops one answer a
    call). ``/status`` of one no longer kept says why
    (``gone``): expired, dropped for newer answers, or too large to keep."""

    KEEP_S = 60.0
    MOST = 1000  # answers kept at most: the oldest go first
    GONE_MOST = 10_000  # ids remembered as no longer kept (with why), the oldest forgotten
    TRIM_AFTER = 1 << 20  # bytes of dropped answers (their JSON) that make a trim worth its cost

    def __init__(self, budget: int | None = None, keep_s: float | None = None) -> None:
        self.budget = _settings.runsync_keep_bytes() if budget is None else budget
        self.keep_s = self.KEEP_S if keep_s is None else keep_s
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        #: id -> (expiry on the monotonic clock, route, answer, its JSON size in bytes)
        self._answers: collections.OrderedDict[str, tuple[float, str, dict[str, Any], int]] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self._gone: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self._untrimmed = 0  # bytes of answers dropped since the last trim
        self._no_room_why: tuple[tuple[int, int], str] = ((0, -1), "")

    def note(self, call: dict[str, Any]) -> None:
        """A call the routes recorded (server/routes.py's ``record``): runsync ones count."""
        if call.get("kind") == "runsync":
            self._counts[(call["route"], call["status"])] += 1

    def of(self, route: str) -> dict[str, int]:
        return {status: n for (r, status), n in self._counts.items() if r == route}

    @property
    def kept_bytes(self) -> int:
        """Bytes of JSON of the answers kept now (at most ``budget``)."""
        return self._bytes

    def keep(self, route: str, answer: dict[str, Any], size: int) -> None:
        """Keep ``answer`` (``size`` bytes of JSON) of a runsync call of ``route`` for
        ``keep_s`` seconds, within ``budget`` bytes and ``MOST`` answers."""
        job_id = answer["id"]
        if size > self.budget:
            self._forget(
                job_id, route, f"its answer ({size} bytes of JSON) was too large to keep: at most"
                f" {self.budget} bytes of /runsync answers are kept (FLASH_RUNSYNC_KEEP_BYTES), for"
                f" {self.keep_s:g} s; read a large result from the /runsync answer itself, call"
                " /run (journaled), or raise FLASH_RUNSYNC_KEEP_BYTES"
            )  # fmt: skip
            return
        self._answers[job_id] = (time.monotonic() + self.keep_s, route, answer, size)
        self._bytes += size
        dropped = 0
        while len(self._answers) > self.MOST or self._bytes > self.budget:
            dropped += self._drop(self._no_room())
        self._trim(dropped + self.expire())
        self._arm()

    def _no_room(self) -> str:
        """Why an answer was dropped for newer ones (made once: a full store drops one a call)."""
        limits = (self.MOST, self.budget)
        if self._no_room_why[0] != limits:
            self._no_room_why = (
                limits,
                "it was dropped to make room for newer /runsync answers (at most "
                f"{self.MOST} answers and {self.budget} bytes, FLASH_RUNSYNC_KEEP_BYTES, are "
                "kept); read a runsync result from its answer, or call /run (journaled) to read "
                "it later",
            )
        return self._no_room_why[1]

    def expire(self) -> int:
        """Drop the answers past their time: how many bytes were dropped."""
        now, dropped = time.monotonic(), 0
        while self._answers and next(iter(self._answers.values()))[0] <= now:
            dropped += self._drop(
                f"it expired: a /runsync answer is kept {self.keep_s:g} s after the call, as "
                "Runpod's; call /run (journaled) to read a result later"
            )
        return dropped

    def answer(self, job_id: str, route: str) -> dict[str, Any] | None:
        """The kept answer of the runsync call ``job_id`` of ``route``, if still kept."""
        kept = self._answers.get(job_id)
        if kept is None or kept[0] < time.monotonic() or kept[1] != route:
            return None
        return kept[2]

    def gone(self, job_id: str, route: str) -> str | None:
        """Why the runsync call ``job_id`` of ``route`` is no longer kept (None: never known)."""
        kept = self._answers.get(job_id)
        if kept is not None and kept[1] == route:  # past its time, not yet dropped
            return f"it expired: a /runsync answer is kept {self.keep_s:g} s after the call"
        why = self._gone.get(job_id)
        return why[1] if why is not None and why[0] == route else None

    def _drop(self, why: str) -> int:
        job_id, (_, route, _, size) = self._answers.popitem(last=False)
        self._bytes -= size
        self._forget(job_id, route, why)
        return size

    def _forget(self, job_id: str, route: str, why: str) -> None:
        self._gone[job_id] = (route, why)
        while len(self._gone) > self.GONE_MOST:
            self._gone.popitem(last=False)

    def _arm(self) -> None:
        """Expire on a timer: at the oldest kept answer's time (on the running loop, if any)."""
        if self._timer is not None or not self._answers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test's direct use): expired at the next call
        delay = max(next(iter(self._answers.values()))[0] - time.monotonic(), 0.0) + 0.01
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._trim(self.expire())
        self._arm()

    def _trim(self, dropped: int) -> None:
        self._untrimmed += dropped
        if self._untrimmed >= self.TRIM_AFTER or (dropped and not self._answers):
            self._untrimmed = 0
            heap.give_back()


def health_body(
    journaled: dict[str, int], retried: int, calls: dict[str, int], pool: dict[str, Any] | None
) -> dict[str, Any]:
    """Runpod's health shape from job counts by status (the journal's and runsync's) and the
    endpoint's pool statistics (``Pool.stats()``; None before its first call)."""

    def count(*statuses: str) -> int:
        return sum(journaled.get(s, 0) + calls.get(s, 0) for s in statuses)

    detail = (pool or {}).get("detail") or []
    ready = [w for w in detail if w.get("state") == "ready"]
    running = sum(1 for w in ready if w.get("calls"))
    return {
        "jobs": {
            "completed": count("COMPLETED"),
            "failed": count("FAILED", "TIMED_OUT"),
            "inProgress": count("IN_PROGRESS"),
            "inQueue": count("IN_QUEUE"),
            "retried": retried,
        },
        "workers": {
            "idle": len(ready) - running,
            "initializing": sum(1 for w in detail if w.get("state") == "starting"),
            "ready": len(ready),
            "running": running,
            "throttled": 0,
            "unhealthy": 0,
        },
    }


def add_health_routes(
    router: APIRouter, base: str, route: QueueRoute, jobs: JobRunner, sync: SyncCalls
) -> None:
    """``{base}/health`` and ``{base}/purge-queue`` for the queue route ``route``."""

    async def health() -> JSONResponse:
        journaled, retried = jobs.journal.counts(route.path)
        # The runtime answers from its own loop: ask from a thread, not this one.
        pool = await asyncio.get_running_loop().run_in_executor(
            None, get_runtime().pool_stats, route.handle.endpoint
        )
        return JSONResponse(health_body(journaled, retried, sync.of(route.path), pool))

    async def purge_queue() -> JSONResponse:
        removed = 0
        for job_id in jobs.journal.queued(route.path):
            job = jobs.cancel(job_id)
            removed += job is not None and job.status == "CANCELLED"
        return JSONResponse({"removed": removed, "status": "completed"})

    async def retry(job_id: str) -> Response:
        job = jobs.journal.get(job_id, load=False)
        if job is None or job.route != route.path:
            return not_found(jobs, job_id, route.path, base)
        again = jobs.retry(job_id) or job
        if again.status != "IN_QUEUE":
            body = {**again.to_response(), "error": f"job {job_id} is {again.status}: only a "
                    "FAILED, TIMED_OUT or CANCELLED job can be retried"}  # fmt: skip
            return results.respond(body, status_code=409)  # a large output: from its file
        return JSONResponse({"id": again.id, "status": again.status})

    name = route.name + (f".{route.method}" if route.method else "")
    router.add_api_route(
        f"{base}/retry/{{job_id}}", retry, methods=["POST"],
        summary=f"run an ended {name} job again", name=f"{base}/retry", include_in_schema=False,
    )  # fmt: skip
    router.add_api_route(
        f"{base}/health", health, methods=["GET"], summary=f"health of {name}'s endpoint",
        name=f"{base}/health", include_in_schema=False,
    )  # fmt: skip
    router.add_api_route(
        f"{base}/purge-queue", purge_queue, methods=["POST"],
        summary=f"cancel {name}'s jobs that have not started", name=f"{base}/purge-queue",
        include_in_schema=False,
    )  # fmt: skip


def id_bases(project: Project) -> dict[str, str]:
    """Each queue route's base by its endpoint's name, as Runpod's API addresses an endpoint by
    its id: ``/v2/{name}`` for an endpoint with one queue callable, ``/v2/{name}/{function or
    method}`` for each of an endpoint's several (the first route keeps a base two share)."""
    names = collections.Counter(r.endpoint_name for r in project.queue)
    bases: dict[str, str] = {}
    for r in project.queue:
        single = names[r.endpoint_name] == 1
        bases[r.path] = f"/v2/{r.endpoint_name}" + ("" if single else f"/{r.method or r.name}")
    return bases
