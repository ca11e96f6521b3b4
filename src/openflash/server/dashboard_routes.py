"""The dashboard's routes: its page, what it shows, a call's detail, and the live feed.

    /                        the page (dashboard/index.html, app.js, style.css)
    /_flash/state            everything it shows, as JSON (``snapshot``)
    /_flash/calls/{id}       one call's detail (``call_detail``): its input, its output or its
                             error with the remote traceback (the user's frames first), its
                             timings, attempts, worker pid, environment and what its worker printed
    /_flash/live             server-sent events: an ``event: state`` with the snapshot whenever it
                             changes (a call, a status, a build, a worker, a line of output); the
                             page needs no polling. The stream ends when the server stops
                             (``app.state.flash_stopping``, set by ``flash run``), so an open page
                             never holds a stop up.

The page writes every value with ``textContent``: nothing a user sent or printed becomes markup.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse

from openflash.backends.gpus import detect_gpus
from openflash.deps.namespace_mode import layer_mode
from openflash.project import ImportFailure
from openflash.runtime.process import get_runtime
from openflash.server import results
from openflash.server.call_records import shown, split_error, user_frames_first
from openflash.server.jobs import FINAL
from openflash.server.state import ServerState

__all__ = ["add_dashboard_routes", "call_detail", "snapshot"]

DASHBOARD = Path(__file__).with_name("dashboard")
#: How often the live feed looks again when nothing told it of a change (a build's log lines).
LIVE_RECHECK_S = 2.0
#: A comment line this often keeps proxies from closing a quiet stream.
LIVE_KEEPALIVE_S = 15.0
#: The fields of a call the list shows (the rest is its detail).
_SUMMARY = ("id", "time", "route", "endpoint", "kind", "status", "seconds", "attempt", "worker_pid")


def add_dashboard_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html")

    @app.get("/_flash/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        path = DASHBOARD / name
        if "/" in name or not path.is_file() or name == "index.html":
            raise HTTPException(404)
        return FileResponse(path)

    @app.get("/_flash/state", include_in_schema=False)
    async def flash_state() -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, snapshot, state)

    @app.get("/_flash/calls/{call_id}", include_in_schema=False)
    async def flash_call(call_id: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        detail = await loop.run_in_executor(None, call_detail, state, call_id)
        if detail is None:
            raise HTTPException(
                404, f"no call {call_id!r} here: the dashboard keeps the last 200 calls"
            )
        return detail

    @app.get("/_flash/live", include_in_schema=False)
    async def flash_live(request: Request) -> StreamingResponse:
        stopping: Callable[[], bool] = getattr(request.app.state, "flash_stopping", _never)
        return StreamingResponse(
            _live(state, stopping),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def _never() -> bool:
    return False


async def _live(state: ServerState, stopping: Callable[[], bool]) -> AsyncIterator[str]:
    """The snapshot each time it changes, as server-sent events, until the server stops."""
    loop = asyncio.get_running_loop()
    yield "retry: 1000\n\n"
    version, sent_version, last = -1, -2, ""
    checked = quiet_since = time.monotonic()
    while not stopping():
        if version != sent_version or time.monotonic() - checked > LIVE_RECHECK_S:
            picture = await loop.run_in_executor(None, snapshot, state)
            picture.pop("time", None)
            body = json.dumps(picture, default=str)
            sent_version, checked = version, time.monotonic()
            if body != last:
                last, quiet_since = body, time.monotonic()
                yield f"event: state\ndata: {body}\n\n"
                await asyncio.sleep(0.2)  # a burst of changes (a worker's output) is one picture
        if time.monotonic() - quiet_since > LIVE_KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": nothing new\n\n"
        version = await state.calls.changes(version, 1.0)  # wakes at once on a change


def _hardware(resource: Any, status: dict[str, Any]) -> str:
    """What the endpoint runs on: its CPU type, its GPUs, or the CPU where GPU workers got none
    (a machine without a GPU: they fall back, with a warning), before any worker starts too."""
    if resource.cpu_instance:
        return f"cpu {resource.cpu_instance.value}"
    workers = (status.get("pool") or {}).get("detail") or []
    if workers and not any(w.get("gpus") for w in workers):
        return f"{resource.gpu_count} GPU asked, running on the CPU (no GPU here)"
    settings = get_runtime().preparer.settings
    if not workers and settings.backend == "local" and not _local_gpus():
        if settings.require_gpu:
            return f"{resource.gpu_count} GPU asked; no GPU here, and FLASH_REQUIRE_GPU=1"
        return f"{resource.gpu_count} GPU asked, will run on the CPU (no GPU here)"
    return f"{resource.gpu_count} GPU"


@functools.cache
def _local_gpus() -> tuple[str, ...]:
    """This machine's GPUs, asked once (``nvidia-smi -L``)."""
    return detect_gpus()


def snapshot(state: ServerState) -> dict[str, Any]:
    """Everything the dashboard shows."""
    runtime = get_runtime()
    endpoints = []
    for endpoint in state.endpoints():
        routes = [
            f"POST {r.path}/runsync"
            for r in state.project.queue
            if r.endpoint_name == endpoint.name
        ]
        routes += [
            f"{r.method} {r.path}" for r in state.project.lb if r.endpoint_name == endpoint.name
        ]
        status = runtime.status(endpoint)
        resource = endpoint.resource
        endpoints.append(
            {
                "name": endpoint.name,
                "routes": routes,
                "hardware": _hardware(resource, status),
                "workers": [resource.workersMin, resource.workersMax],
                "dependencies": list(endpoint.dependencies),
                "system_dependencies": list(endpoint.system_dependencies),
                "output": state.output.tail(endpoint.name, 30),
                **status,
            }
        )
    recent = []
    for call in state.calls.newest_first()[:50]:
        item = {k: call.get(k) for k in _SUMMARY}
        _with_job(state, call, item)
        error = split_error(item.pop("error", None) or call.get("error"))
        item["error"] = error["message"] if error else None
        recent.append(item)
    return {
        "project": str(state.root),
        "time": time.time(),
        "endpoints": endpoints,
        "recent": recent,
        "failures": [_import_failure(state, f) for f in state.project.failures],
        "skipped": [str(f.relative_to(state.root)) for f in state.project.skipped],
        "events": list(state.events)[-20:],
        "templates": runtime.templates(),
        "layer_mode": asdict(layer_mode(runtime.preparer.settings.namespaces)),
    }


def _import_failure(state: ServerState, failure: ImportFailure) -> dict[str, str]:
    """A file that failed to import: its traceback from the user's frames (openflash's and
    importlib's own, which come first, kept apart)."""
    user, own = user_frames_first(failure.traceback)
    return {
        "file": str(failure.file.relative_to(state.root)),
        "traceback": user,
        "openflash_frames": own,
    }


def _with_job(state: ServerState, call: dict[str, Any], item: dict[str, Any]) -> None:
    """A /run job's status, attempt, times and result from the journal, and its progress."""
    feed = call.get("feed")
    if feed is not None and feed.progress is not None:
        item["progress"] = feed.progress  # the latest openflash.progress of a /run job
    if call.get("kind") != "run":
        return
    job = state.journal.get(str(call["id"]), load=False)
    if job is None:
        return
    item["status"], item["attempt"] = job.status, job.attempt
    if job.status in FINAL and job.finished and job.started:
        item["seconds"] = job.finished - job.started
    item["input"], item["received"] = job.input, job.created
    item["started"], item["ended"] = job.started, job.finished
    if job.status == "COMPLETED":  # a large one: its first bytes, read from its file
        stored = isinstance(job.output, results.Stored)
        item["output"] = results.preview(job.output) if stored else job.output
    if job.error:
        item["error"] = job.error


def _journaled(state: ServerState, call_id: str) -> dict[str, Any] | None:
    """A /run job the recent calls no longer hold (or a previous server ran), from the journal."""
    job = state.journal.get(call_id, load=False)
    if job is None:
        return None
    endpoint = next((r.endpoint_name for r in state.project.queue if r.path == job.route), None)
    return {
        "id": job.id,
        "time": job.created,
        "route": job.route,
        "endpoint": endpoint,
        "kind": "run",
    }


def call_detail(state: ServerState, call_id: str) -> dict[str, Any] | None:
    """One call as its detail view shows it (see the module's docstring)."""
    call = state.calls.get(call_id) or _journaled(state, call_id)
    if call is None:
        return None
    item = {k: v for k, v in call.items() if k != "feed"}
    item.setdefault("received", call["time"])
    _with_job(state, call, item)
    endpoint = next((e for e in state.endpoints() if e.name == call.get("endpoint")), None)
    started = item.get("started") or item["received"]
    ended = item.get("ended")
    pid = item.get("worker_pid")
    return {
        "id": call_id,
        "route": item.get("route"),
        "endpoint": item.get("endpoint"),
        "kind": item.get("kind"),
        "status": item.get("status"),
        "attempt": item.get("attempt") or 1,
        "progress": item.get("progress"),
        "input": shown(item.get("input")),
        "output": shown(item["output"]) if "output" in item else None,
        "error": split_error(item.get("error")),
        "timings": {
            "received": item["received"],
            "started": item.get("started"),
            "ended": ended,
            "queue_wait": item.get("queue_wait"),
            "seconds": item.get("seconds"),
        },
        "worker": {"pid": pid},
        "environment": None
        if endpoint is None
        else {
            "dependencies": list(endpoint.dependencies),
            "system_dependencies": list(endpoint.system_dependencies),
            "hardware": _hardware(endpoint.resource, get_runtime().status(endpoint)),
        },
        "worker_output": state.output.during(str(item.get("endpoint")), pid, started, ended)
        if pid is not None
        else [],
    }
