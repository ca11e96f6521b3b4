"""The hot queue routes (``POST {base}/runsync``, ``POST {base}/run``, ``GET {base}/status/{id}``)
answered in front of FastAPI.

A small call's HTTP handling in FastAPI (its middleware stack, the walk over every route, a
``Request``, the exception wrappers, each middleware's ``send`` wrapper) costs the server about as
much CPU as the call itself. ``FlashApp`` is the FastAPI app of ``flash run`` with one step before
it: a request whose method and exact path name a route served by ``JsonBodyRoute`` (the queue
routes' POSTs, invocation.py), or a GET of a ``JobIdRoute``'s path with a job's id (``/status``),
is answered here, by the same steps the FastAPI path takes, in the same order, with the same
bytes:

1. the security checks (security.py's ``screen``: Host allow-list, API key, body size, JSON only,
   nesting), a refusal sent as the middleware sends it;
2. a POST's body validated in one pass (invocation.py's ``validated``), a refusal answered with the
   same 422 as FastAPI's handler for ``RequestValidationError`` (``invalid_response``);
3. the route's own handler (routes.py), whose response is sent as one ``http.response.start`` and
   one ``http.response.body`` (a streamed one, a large result, as it streams);
4. the access log's line and the metrics (access_log.py's ``report``), from the note the handler
   filled; an unexpected exception answered with the same 500 as app.py's handler, then raised.

Every other request (other paths and methods, a path a route with parameters matches first, a
``root_path``) goes to FastAPI unchanged, so 404s and 405s are FastAPI's. The table of exact paths
is built from the app's routes in their order the first time it is needed, and again whenever the
routes change (a reload installs a new router): a path is in it only when no earlier route
matches it (a ``/status`` path: when none can match any id), as Starlette would find that one
first.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Match, Mount

from openflash.server.access_log import quiet_path, request_fields
from openflash.server.invocation import JobIdRoute, JsonBodyRoute, validated
from openflash.server.responses import JSONResponse, crashed_response
from openflash.server.security import Refusal, SecurityMiddleware
from openflash.workers import events

__all__ = ["FastPath", "FlashApp", "HotRoute", "crashed_response", "invalid_response"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[..., Awaitable[Response]]
_KEEP_BODY = 65536  # as access_log.py keeps of a failed response's body


def invalid_response(exc: RequestValidationError) -> JSONResponse:
    """The 422 of a body that does not match the function's parameters."""
    errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
    return JSONResponse(
        {"error": "the request does not match the function's parameters", "detail": errors},
        status_code=422,
    )


@dataclass(frozen=True)
class HotRoute:
    """A route answered here: its handler, and the model its body is validated into (None: a
    ``JobIdRoute``, whose handler takes ``job_id``, the path's last part)."""

    handler: Handler
    model: type[BaseModel] | None = None


class FlashApp(FastAPI):
    """FastAPI, with ``fast`` (a ``FastPath``, set by app.py) asked first."""

    fast: FastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if fast is not None and scope["type"] == "http" and not scope.get("root_path"):
            route = fast.lookup(scope["method"], scope["path"])
            if route is not None:
                await fast.serve(route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class FastPath:
    """The routes ``FlashApp`` answers itself, and how (see the module's docstring).

    ``security`` is the app's checks, ``report`` what hears of each call (the access log and the
    metrics); ``served`` counts the requests answered here."""

    def __init__(
        self,
        app: FastAPI,
        security: SecurityMiddleware,
        report: Callable[[dict[str, Any]], None],
        version: Callable[[], object],
    ) -> None:
        self.app, self.security, self.report = app, security, report
        self._version = version
        self._built_for: tuple[object, int] | None = None
        self._table: dict[tuple[str, str], HotRoute] = {}
        self._by_id: dict[str, HotRoute] = {}  # GET {head}/{job_id} by head
        self.served = 0

    def lookup(self, method: str, path: str) -> HotRoute | None:
        """The route this server answers ``method path`` with here, or None (FastAPI's)."""
        routes = self.app.router.routes
        key = (self._version(), len(routes))
        if key != self._built_for:
            (self._table, self._by_id), self._built_for = _tables(routes), key
        hot = self._table.get((method, path))
        if hot is None and method == "GET":
            head, _, job_id = path.rpartition("/")
            hot = self._by_id.get(head) if job_id else None
        return hot

    async def serve(self, route: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        self.served += 1
        response: dict[str, Any] = {"status": 0, "body": b""}
        if quiet_path(scope["path"]):  # not logged: no note, no line
            await self._answer(route, scope, receive, send, response)
            return
        note: dict[str, Any] = {}
        token = events.call_note.set(note)
        started = time.perf_counter()
        try:
            await self._answer(route, scope, receive, send, response)
        except BaseException:
            response["status"] = response["status"] or 500
            raise
        finally:
            events.call_note.reset(token)
            self.report(request_fields(scope, note, response, time.perf_counter() - started))

    async def _answer(
        self, route: HotRoute, scope: Scope, receive: Receive, send: Send, sent: dict[str, Any]
    ) -> None:
        """Answer the request; ``sent`` gets its HTTP ``status`` and, from 400 on, the start of
        its ``body`` (a 500's too, before the exception is raised on)."""
        screened = await self.security.screen(scope, receive)
        if isinstance(screened, Refusal):
            await send(screened.start())
            await send(screened.body())
            sent["status"], sent["body"] = screened.status, screened.payload()
            return
        try:
            try:
                if route.model is None:
                    answer = await route.handler(job_id=scope["path"].rpartition("/")[2])
                else:
                    answer = await route.handler(body=validated(route.model, screened or b""))
            except RequestValidationError as e:
                answer = invalid_response(e)
        except Exception as e:
            answer = crashed_response(e)
            await send(
                {"type": "http.response.start", "status": 500, "headers": answer.raw_headers}
            )
            # the log's line names the error, as access_log.py's middleware reads it from a 500
            sent["status"], sent["body"] = 500, bytes(answer.body)[:_KEEP_BODY]
            await send({"type": "http.response.body", "body": answer.body})
            raise  # as FastAPI's outermost middleware does, for uvicorn's log
        if isinstance(answer, StreamingResponse):
            sent["status"], sent["body"] = await _streamed(answer, scope, receive, send)
            return
        status, body = answer.status_code, bytes(answer.body)
        await send({"type": "http.response.start", "status": status, "headers": answer.raw_headers})
        await send({"type": "http.response.body", "body": body})
        sent["status"], sent["body"] = status, (body[:_KEEP_BODY] if status >= 400 else b"")
        if answer.background is not None:
            await answer.background()


async def _streamed(
    answer: StreamingResponse, scope: Scope, receive: Receive, send: Send
) -> tuple[int, bytes]:
    kept = [b""]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.body" and answer.status_code >= 400:
            kept[0] = (kept[0] + bytes(message.get("body", b"")))[:_KEEP_BODY]
        await send(message)

    await answer(scope, receive, sending)
    return answer.status_code, kept[0]


def _tables(
    routes: list[BaseRoute],
) -> tuple[dict[tuple[str, str], HotRoute], dict[str, HotRoute]]:
    """(method, path) -> the route Starlette would pick for it, for each parameterless
    ``JsonBodyRoute`` that no earlier route matches; and each ``JobIdRoute`` (GET) by its path
    before ``/{job_id}``, where no earlier route can match any path it does."""
    exact: dict[tuple[str, str], HotRoute] = {}
    by_id: dict[str, HotRoute] = {}
    for index, route in enumerate(routes):
        if isinstance(route, JsonBodyRoute) and not route.param_convertors:
            for method in route.methods or ():
                key = (method, route.path)
                if key not in exact and not _matched_before(routes[:index], method, route.path):
                    exact[key] = HotRoute(route.endpoint, route.body_model)
        elif isinstance(route, JobIdRoute) and route.path.endswith("/{job_id}"):
            head = route.path.removesuffix("/{job_id}")
            if "{" not in head and head not in by_id and not _overlaps(routes[:index], head):
                by_id[head] = HotRoute(route.endpoint)
    return exact, by_id


def _overlaps(routes: list[BaseRoute], head: str) -> bool:
    """Whether one of ``routes`` might match a path ``{head}/{anything}``: a route matches only
    paths that start with its path's fixed part (up to its first parameter), so one can only
    where that part and ``{head}/`` start alike; a route with no path, any."""
    prefix = head + "/"
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return True
        fixed = path.split("{", 1)[0]
        if "{" in path or isinstance(route, Mount):
            if fixed.startswith(prefix) or prefix.startswith(fixed):
                return True
        elif path.startswith(prefix):
            return True
    return False


def _matched_before(routes: list[BaseRoute], method: str, path: str) -> bool:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    for earlier in routes:
        try:
            match, _ = earlier.matches(scope)
        except Exception:  # a route that cannot tell: leave the path to Starlette
            return True
        if match is Match.FULL:
            return True
    return False
