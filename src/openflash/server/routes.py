"""HTTP routes for a project's endpoints, in the shapes Runpod Flash's dev server uses.

Queue-style (per function, and per public method of an endpoint class):

    POST {base}/runsync        {"input": {<parameters by name>}} -> {"id", "status", "output"}
    POST {base}/run            -> {"id", "status": "IN_QUEUE"}     (journaled, see jobs.py);
                                  {"input": ..., "webhook": "https://..."} POSTs the job's
                                  status body there when it ends (webhooks.py)
    GET  {base}/status/{id}    -> {"id", "status", "output" | "error", "delayTime", "attempt",
                                  ...}; a 404 with status EXPIRED past FLASH_JOB_TTL
    POST {base}/cancel/{id}

    GET  {base}/health         -> the endpoint's jobs and workers, Runpod's shape
    POST {base}/purge-queue    -> cancels the route's jobs that have not started
    POST {base}/retry/{id}     -> runs an ended job that did not complete again (these three:
                                  endpoint_health.py)

``base`` is ``/{file path}/{function}``, and also ``/{file path}`` when the file holds a single
endpoint function, and ``/v2/{endpoint name}`` (``/v2/{endpoint name}/{function}`` for an
endpoint with several), as Runpod's API addresses an endpoint by its id: ``Endpoint(id=name)``
and the runpod SDK (``runpod.endpoint_url_base = "http://localhost:8888/v2"``) call it there.
Load-balanced handlers are served by balanced_routes.py.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel, create_model
from starlette.responses import Response

from openflash.api import streams
from openflash.api.remote import RemoteClass, RemoteFunction, RemoteInstance
from openflash.project import Project, QueueRoute
from openflash.server import job_streams, results, webhooks
from openflash.server.balanced_routes import add_lb_route, model_name
from openflash.server.call_records import Later, call_fields
from openflash.server.endpoint_health import SyncCalls, add_health_routes, id_bases
from openflash.server.invocation import (
    JobIdRoute,
    JsonBodyRoute,
    arguments,
    call_outcome,
    input_model,
)
from openflash.server.jobs import JobRunner
from openflash.server.responses import JSONResponse

__all__ = ["ROUTE_TAG", "RecentCalls", "build_router", "constructor_warnings"]

ROUTE_TAG = "openflash-project"

RecentCalls = Callable[[dict[str, Any]], None]
Invoke = Callable[[dict[str, Any]], Awaitable[Any]]
JobInvoker = Callable[[dict[str, Any]], Awaitable[tuple[str, Any, "str | None"]]]


def build_router(
    project: Project, jobs: JobRunner, record: RecentCalls, sync: SyncCalls | None = None
) -> tuple[APIRouter, dict[str, JobInvoker]]:
    """A router with every route of ``project``, and the job invokers by queue base path.

    Each queue route is also served by its endpoint's name, as Runpod's API serves an endpoint
    by its id (``/v2/{name}/runsync``; ``/v2/{name}/{function or method}/runsync`` where the
    endpoint has several), with ``/health`` and ``/purge-queue`` (endpoint_health.py); a
    load-balanced route also at ``/v2/{name}{path}``.
    """
    router = APIRouter(tags=["endpoints"])
    invokers: dict[str, JobInvoker] = {}
    instances: dict[int, RemoteInstance] = {}
    feeds = job_streams.Feeds()
    ids = id_bases(project)
    sync = sync or SyncCalls()
    # Route handlers first: a route the user declared (a GET /health of their own) wins over a
    # queue route's generated one at the same path.
    for lb in project.lb:
        add_lb_route(router, lb, record)
    for route in project.queue:
        invoke = _queue_invoker(route, instances)
        model = input_model(_target(route), f"{model_name(route.path)}_input")
        invokers[route.path] = _job_invoker(invoke, model, jobs.max_result)
        for base in filter(None, (route.path, route.short_path, ids[route.path])):
            _add_queue_routes(router, route, base, model, invoke, jobs, record, feeds, sync)
            job_streams.add_stream_routes(router, base, route.path, jobs, feeds)
            add_health_routes(router, base, route, jobs, sync)
    for served in router.routes:  # the /v2 aliases repeat routes: /docs lists each once
        if isinstance(served, APIRoute) and served.path.startswith("/v2/"):
            served.include_in_schema = False
    return router, invokers


def constructor_warnings(project: Project) -> list[str]:
    """A warning for each endpoint class whose constructor needs arguments: over HTTP an instance
    is made with none (as Runpod Flash's dev server does), so its calls would fail."""
    warnings: dict[int, str] = {}
    for route in project.queue:
        cls = route.handle.__wrapped__
        if route.method is None or id(cls) in warnings:
            continue
        try:
            params = list(inspect.signature(cls).parameters.values())
        except (TypeError, ValueError):
            continue
        needed = [
            p.name
            for p in params
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if needed:
            warnings[id(cls)] = (
                f"class {cls.__name__} ({route.file.name}) needs constructor arguments "
                f"({', '.join(needed)}); served over HTTP it is made with none, so its calls "
                "will fail: give them defaults, or read them from os.environ in __init__"
            )
    return list(warnings.values())


def _target(route: QueueRoute) -> Any:
    fn = route.handle.__wrapped__
    return getattr(fn, route.method) if route.method else fn


def _queue_invoker(route: QueueRoute, instances: dict[int, RemoteInstance]) -> Invoke:
    if route.method is None:
        handle = route.handle
        assert isinstance(handle, RemoteFunction)  # a route without a method is a function's

        async def call_function(kwargs: dict[str, Any]) -> Any:
            return await job_streams.collect(handle(**kwargs))

        return call_function
    cls = route.handle
    assert isinstance(cls, RemoteClass)
    method = route.method

    async def call_method(kwargs: dict[str, Any]) -> Any:
        # One instance per class, made with no arguments, as Runpod Flash's dev server does.
        instance = instances.get(id(cls))
        if instance is None:
            instance = instances[id(cls)] = cls()
        return await job_streams.collect(getattr(instance, method)(**kwargs))

    return call_method


def _add_queue_routes(
    router: APIRouter,
    route: QueueRoute,
    base: str,
    model: type[BaseModel],
    invoke: Invoke,
    jobs: JobRunner,
    record: RecentCalls,
    feeds: job_streams.Feeds,
    sync: SyncCalls,
) -> None:
    required = any(f.is_required() for f in model.model_fields.values())
    request_model = create_model(
        f"{model_name(base)}_request",
        input=(model, ...) if required else (model, model()),
        webhook=(str | None, None),  # /run only: where the job's result is POSTed
    )
    name = route.name + (f".{route.method}" if route.method else "")
    summary = (inspect.getdoc(_target(route)) or name).splitlines()[0]

    async def runsync(body: Any) -> Response:
        started, wall = asyncio.get_running_loop().time(), time.time()
        job_id = _new_id()
        outcome = await call_outcome(invoke(arguments(body.input)), jobs.max_result)
        shown = outcome.output
        if isinstance(shown, results.Encoded):  # the dashboard keeps its first bytes, not all
            shown = results.preview(shown)
        record(
            {
                "id": job_id,
                "route": route.path,
                "endpoint": route.endpoint_name,
                "kind": "runsync",
                "status": outcome.status,
                "seconds": asyncio.get_running_loop().time() - started,
                **call_fields(
                    Later(partial(body.input.model_dump, mode="json")), wall, shown, outcome.error
                ),  # the input's JSON made when the dashboard asks
            }
        )
        payload: dict[str, Any] = {"id": job_id, "status": outcome.status}
        if outcome.status == "COMPLETED":
            payload["output"] = outcome.output
        else:
            payload["error"] = outcome.error
        size = len(outcome.encoded.data) if outcome.encoded else len(str(outcome.error))
        sync.keep(route.path, payload, size)  # /status/{id} answers it a while, as Runpod's
        return results.respond(payload, outcome.http_status, outcome.encoded)

    async def run(body: Any) -> JSONResponse:
        if body.webhook is not None and (problem := webhooks.webhook_error(body.webhook)):
            return JSONResponse({"error": problem}, status_code=422)
        feed = job_streams.Feed()  # the job's task inherits this context: its items go there
        tokens = job_streams.current_feed.set(feed), streams.progress_sink.set(feed.report)
        job = jobs.submit(route.path, body.input.model_dump(mode="json"), body.webhook)
        feeds[job.id] = feed
        job_streams.current_feed.reset(tokens[0])
        streams.progress_sink.reset(tokens[1])
        record(
            {
                "id": job.id,
                "route": route.path,
                "endpoint": route.endpoint_name,
                "kind": "run",
                "status": "IN_QUEUE",
                "seconds": None,
                "feed": feed,  # the dashboard shows its progress (dashboard_routes.py)
            }
        )
        return JSONResponse({"id": job.id, "status": job.status})

    async def status(job_id: str) -> Response:
        job = jobs.get(job_id, load=False)  # a large output is sent from its file
        if job is None or job.route != route.path:
            kept = sync.answer(job_id, route.path)  # a runsync call's, kept a minute
            if kept is not None:
                return results.respond(kept)
            why = sync.gone(job_id, route.path)  # one no longer kept: why
            if why is not None:
                gone = f"runsync call {job_id!r} on {base} is no longer kept: {why}"
                return JSONResponse({"id": job_id, "status": "EXPIRED", "error": gone}, 404)
            return job_streams.not_found(jobs, job_id, route.path, base)
        return results.respond(job_streams.with_progress(job.to_response(), feeds.get(job_id)))

    async def cancel(job_id: str) -> Response:
        job = jobs.journal.get(job_id, load=False)
        if job is None or job.route != route.path:
            return job_streams.not_found(jobs, job_id, route.path, base)
        job = jobs.cancel(job_id) or job
        return results.respond(job.to_response())

    _typed(runsync, body=request_model)
    _typed(run, body=request_model)
    for path, handler, method, what in (
        ("runsync", runsync, "POST", f"{summary} (wait)"),
        ("run", run, "POST", f"{summary} (job)"),
        ("status/{job_id}", status, "GET", f"status of a {name} job"),
        ("cancel/{job_id}", cancel, "POST", f"cancel a {name} job"),
    ):
        route_name = f"{base}/{path.split('/')[0]}"
        router.add_api_route(
            f"{base}/{path}",
            handler,
            methods=[method],
            summary=what,
            name=route_name,
            # the body read in one pass (invocation.py); /status and /cancel have none; the
            # POSTs and /status are answered before FastAPI (fast_path.py)
            route_class_override=_route_class(method, path),
        )


def _route_class(method: str, path: str) -> type[APIRoute] | None:
    if method == "POST" and "{" not in path:
        return JsonBodyRoute
    return JobIdRoute if path == "status/{job_id}" else None


def _job_invoker(invoke: Invoke, model: type[BaseModel], max_result: int | None) -> JobInvoker:
    """What the job runner calls: the journaled (JSON) input validated again, then the call;
    its result comes back as JSON bytes (``results.Encoded``), which the journal keeps."""

    async def run_job(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
        outcome = await call_outcome(invoke(arguments(model.model_validate(payload))), max_result)
        return outcome.status, outcome.encoded, outcome.error

    return run_job


def _typed(fn: Callable[..., Any], **annotations: Any) -> None:
    # FastAPI reads the parameters from __signature__, which functions do not declare.
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a)
            for n, a in annotations.items()
        ]
    )


def _new_id() -> str:
    """A call's id in ``uuid.uuid4().hex``'s form (random, version 4, the RFC 4122 variant), its
    bits set as ``uuid.UUID(version=4)`` sets them, without making a ``UUID`` each call."""
    return f"{int.from_bytes(os.urandom(16), 'big') & _ID_KEEP | _ID_SET:032x}"


_ID_KEEP = ((1 << 128) - 1) & ~(0xC000 << 48) & ~(0xF000 << 64)  # variant and version cleared
_ID_SET = (0x8000 << 48) | (4 << 76)  # the RFC 4122 variant, version 4
