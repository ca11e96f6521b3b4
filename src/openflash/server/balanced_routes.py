"""Load-balanced routes: each handler of a route-style endpoint served at ``{METHOD} /{file
path}{route path}`` (and ``/v2/{endpoint name}{route path}``, as Runpod serves a load-balanced
endpoint's routes at its own address). Parameters come from the path, the query (GET, DELETE) or
a JSON body of parameters by name (or, for a single model parameter, the model's own flat body);
the answer is the function's return value, or a generator function's items as server-sent events
(route_streams.py). A handler declared ``local=True`` runs in this server's process, not on a
worker (as Runpod Flash's ``local=True``).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import typing
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from openflash.api import streams
from openflash.errors import ExecutionTimeoutError, FlashError, RemoteError
from openflash.project import LBRoute
from openflash.server import route_streams
from openflash.server.call_records import call_fields
from openflash.server.invocation import (
    arguments,
    flat_body_type,
    input_model,
    parameters_of,
    to_json,
)
from openflash.server.responses import JSONResponse

__all__ = ["add_lb_route", "model_name"]

_PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?}")
#: User errors that mean the request was wrong, as Runpod Flash's dev server maps them.
_CLIENT_ERRORS = (ValueError, KeyError, TypeError)


def model_name(path: str) -> str:
    """A route path as an identifier, for the names of its generated pydantic models."""
    return re.sub(r"\W", "_", path.strip("/")) or "root"


def add_lb_route(router: APIRouter, lb: LBRoute, record: Callable[[dict[str, Any]], None]) -> None:
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
        body_model = input_model(
            _without(fn, path_names), f"{model_name(lb.path)}_{lb.method}_body"
        )
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
                    "id": uuid.uuid4().hex,
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
            call = _in_process(fn, kwargs) if lb.route.local else handle(**kwargs)
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
    for path in (lb.path, f"/v2/{lb.endpoint_name}{lb.route.path}"):
        router.add_api_route(
            path, handler, methods=[lb.method], summary=summary, name=f"{lb.method} {path}"
        )


async def _in_process(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """A ``local=True`` handler's call, in this process: a coroutine awaited, a plain function
    run in a thread (so that it does not hold up the server)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    return await asyncio.to_thread(fn, **kwargs)


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


def _hints(fn: Any) -> dict[str, Any]:
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
