"""HTTP routes for a project's endpoints, in the shapes Runpod Flash's dev server uses.

Queue-style (per function, and per public method of an endpoint class):

    POST {base}/runsync        {"input": {<parameters by name>}} -> {"id", "status", "output"}
    POST {base}/run            -> {"id", "status": "IN_QUEUE"}     (journaled, see jobs.py);
                                  {"input": ..., "webhook": "https://..."} POSTs the job's
                                  status body there when it ends (webhooks.py)
    GET  {base}/status/{id}    -> {"id", "status", "output" | "error", "delayTime", "attempt",
                                  ...}; a 404 with status EXPIRED past FLASH_JOB_TTL
    POST {base}/cancel/{id}

``base`` is ``/{file path}/{function}``, and also ``/{file path}`` when the file holds a single
endpoint function. Load-balanced handlers are served at ``{METHOD} /{file path}{route path}``:
their parameters come from the path, the query (GET, DELETE) or a JSON body of parameters by
name; they answer with the function's return value, or a generator function's items as
server-sent events (route_streams.py).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, create_model
from starlette.responses import Response

from openflash.api import streams
from openflash.api.remote import RemoteClass, RemoteFunction, RemoteInstance
from openflash.errors import ExecutionTimeoutError, FlashError, RemoteError
from openflash.project import LBRoute, Project, QueueRoute
from openflash.server import job_streams, route_streams, webhooks
from openflash.server.call_records import call_fields
from openflash.server.invocation import (
    arguments,
    call_outcome,
    flat_body_type,
    input_model,
    parameters_of,
    to_json,
)
from openflash.server.jobs import JobRunner
from openflash.server.responses import JSONResponse

__all__ = ["ROUTE_TAG", "RecentCalls", "build_router", "constructor_warnings"]

ROUTE_TAG = "openflash-project"
_PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?}")
#: User errors that mean the request was wrong, as Runpod Flash's dev server maps them.
_CLIENT_ERRORS = (ValueError, KeyError, TypeError)

RecentCalls = Callable[[dict[str, Any]], None]
Invoke = Callable[[dict[str, Any]], Awaitable[Any]]
JobInvoker = Callable[[dict[str, Any]], Awaitable[tuple[str, Any, "str | None"]]]


def build_router(
    project: Project, jobs: JobRunner, record: RecentCalls
) -> tuple[APIRouter, dict[str, JobInvoker]]:
    """A router with every route of ``project``, and the job invokers by queue base path."""
    router = APIRouter(tags=["endpoints"])
    invokers: dict[str, JobInvoker] = {}
    instances: dict[int, RemoteInstance] = {}
    feeds = job_streams.Feeds()
    for route in project.queue:
        invoke = _queue_invoker(route, instances)
        model = input_model(_target(route), f"{_ident(route.path)}_input")
        invokers[route.path] = _job_invoker(invoke, model)
        for base in filter(None, (route.path, route.short_path)):
            _add_queue_routes(router, route, base, model, invoke, jobs, record, feeds)
            job_streams.add_stream_routes(router, base, route.path, jobs, feeds)
    for lb in project.lb:
        _add_lb_route(router, lb, record)
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


def _ident(path: str) -> str:
    return re.sub(r"\W", "_", path.strip("/")) or "root"


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
) -> None:
    required = any(f.is_required() for f in model.model_fields.values())
    request_model = create_model(
        f"{_ident(base)}_request",
        input=(model, ...) if required else (model, model()),
        webhook=(str | None, None),  # /run only: where the job's result is POSTed
    )
    name = route.name + (f".{route.method}" if route.method else "")
    summary = (inspect.getdoc(_target(route)) or name).splitlines()[0]

    async def runsync(body: Any) -> JSONResponse:
        started, wall = asyncio.get_running_loop().time(), time.time()
        job_id = _new_id()
        outcome = await call_outcome(invoke(arguments(body.input)))
        record(
            {
                "id": job_id,
                "route": route.path,
                "endpoint": route.endpoint_name,
                "kind": "runsync",
                "status": outcome.status,
                "seconds": asyncio.get_running_loop().time() - started,
                **call_fields(
                    body.input.model_dump(mode="json"), wall, outcome.output, outcome.error
                ),
            }
        )
        payload: dict[str, Any] = {"id": job_id, "status": outcome.status}
        if outcome.status == "COMPLETED":
            payload["output"] = outcome.output
        else:
            payload["error"] = outcome.error
        return JSONResponse(payload, status_code=outcome.http_status)

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

    async def status(job_id: str) -> JSONResponse:
        job = jobs.journal.get(job_id)
        if job is None or job.route != route.path:
            return job_streams.not_found(jobs, job_id, route.path, base)
        return JSONResponse(job_streams.with_progress(job.to_response(), feeds.get(job_id)))

    async def cancel(job_id: str) -> JSONResponse:
        job = jobs.journal.get(job_id)
        if job is None or job.route != route.path:
            return job_streams.not_found(jobs, job_id, route.path, base)
        job = jobs.cancel(job_id) or job
        return JSONResponse(job.to_response())

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
            f"{base}/{path}", handler, methods=[method], summary=what, name=route_name
        )


def _job_invoker(invoke: Invoke, model: type[BaseModel]) -> JobInvoker:
    """What the job runner calls: the journaled (JSON) input validated again, then the call."""

    async def run_job(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
        outcome = await call_outcome(invoke(arguments(model.model_validate(payload))))
        return outcome.status, outcome.output, outcome.error

    return run_job


def _add_lb_route(router: APIRouter, lb: LBRoute, record: RecentCalls) -> None:
    fn = lb.route.function
    handle = lb.route.handle
    path_names = set(_PATH_PARAM.findall(lb.path))
    params = parameters_of(fn)
    model_fields = [p for p in params if p.name not in path_names]
    body_method = lb.method in ("POST", "PUT", "PATCH")
    signature: list[inspect.Parameter] = []
    hints = _hints(fn)
    for p in params:
        if p.name in path_names:
            signature.append(
                inspect.Parameter(
                    p.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, str)
                )
            )
        elif not body_method:
            default = ... if p.default is inspect.Parameter.empty else p.default
            signature.append(
                inspect.Parameter(
                    p.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=hints.get(p.name, str),
                    default=Query(default),
                )
            )
    body_model = None
    if body_method and model_fields:
        body_model = input_model(_without(fn, path_names), f"{_ident(lb.path)}_{lb.method}_body")
        required = any(f.is_required() for f in body_model.model_fields.values())
        annotation: Any = body_model
        flat = flat_body_type(fn, [p.name for p in model_fields])
        if flat is not None:  # {"item": {...}} as before, or FastAPI's flat {...} as the item
            annotation = Annotated[body_model | flat, Field(union_mode="left_to_right")]
        signature.append(
            inspect.Parameter(
                "body",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=annotation,
                default=... if required else None,
            )
        )

    async def handler(**values: Any) -> Response:
        started, wall = asyncio.get_running_loop().time(), time.time()
        body = values.pop("body", None)
        kwargs = dict(values)
        if isinstance(body, BaseModel) and type(body) is body_model:
            kwargs.update(arguments(body))
        elif body is not None:  # the flat form: the body is the one model parameter
            kwargs[model_fields[0].name] = body

        def done(status: str, content: Any = None) -> None:
            failed = status != "COMPLETED" and isinstance(content, dict)
            record(
                {
                    "id": _new_id(),
                    "route": f"{lb.method} {lb.path}",
                    "endpoint": lb.endpoint_name,
                    "kind": "route",
                    "status": status,
                    "seconds": asyncio.get_running_loop().time() - started,
                    **call_fields(
                        to_json(kwargs),
                        wall,
                        None if failed else content,
                        str(content.get("detail")) if failed else None,
                    ),
                }
            )

        try:
            call = handle(**kwargs)
        except Exception as e:
            call = _raise(e)
        if isinstance(call, streams.Stream):  # a generator function: its items as events
            return await route_streams.respond(call, _lb_failure, done)
        status_code, content = await _lb_call(call)
        done("COMPLETED" if status_code == 200 else "FAILED", content)
        return JSONResponse(content, status_code=status_code)

    # FastAPI reads the parameters from __signature__, which functions do not declare.
    handler.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
    summary = (inspect.getdoc(fn) or fn.__name__).splitlines()[0]
    router.add_api_route(
        lb.path, handler, methods=[lb.method], summary=summary, name=f"{lb.method} {lb.path}"
    )


async def _lb_call(call: Awaitable[Any]) -> tuple[int, Any]:
    try:
        result = await call
    except Exception as e:
        return _lb_failure(e)
    try:
        return 200, to_json(result)
    except Exception as e:
        return 500, {"detail": f"the result cannot be sent as JSON: {e}"}


def _lb_failure(e: Exception) -> tuple[int, Any]:
    """The status code and body a route-style call's exception answers with."""
    if isinstance(e, ExecutionTimeoutError):
        return 504, {"detail": str(e)}
    if isinstance(e, RemoteError):
        client = isinstance(e.exception, _CLIENT_ERRORS) or isinstance(e, _CLIENT_ERRORS)
        return (422 if client else 500), {"detail": str(e)}
    if isinstance(e, FlashError):
        return 500, {"detail": str(e)}
    return 500, {"detail": f"{type(e).__name__}: {e}"}


async def _raise(e: Exception) -> Any:
    raise e


def _typed(fn: Callable[..., Any], **annotations: Any) -> None:
    # FastAPI reads the parameters from __signature__, which functions do not declare.
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a)
            for n, a in annotations.items()
        ]
    )


def _hints(fn: Any) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


def _without(fn: Callable[..., Any], names: set[str]) -> Callable[..., Any]:
    """A stand-in for ``fn`` whose signature lacks ``names`` (path parameters)."""
    sig = inspect.signature(fn)
    hints = _hints(fn)

    def stand_in() -> None: ...

    # FastAPI reads the parameters from __signature__, which functions do not declare.
    stand_in.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in sig.parameters.values()
            if p.name not in names
        ]
    )
    return stand_in


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex
