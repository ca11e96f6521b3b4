"""The FastAPI app of ``flash run``: the project's routes, jobs, docs, health and dashboard.

/health, /ping              liveness; never touches a worker
/docs, /openapi.json        Swagger UI from a package's files (works offline)
/, /_flash/...              the dashboard, a call's detail, its live feed (dashboard_routes.py)
/metrics                    Prometheus metrics (metrics.py)

Each call is logged to the terminal (access_log.py), as text or JSON lines.
everything else             the project's endpoints (routes.py), swapped in place on reload;
                            /runsync, /run and /status answered before FastAPI (fast_path.py)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from openflash import _subprocess
from openflash.runtime.process import (
    current,
    get_runtime,
    run_on_current_loop,
    shutdown_current_loop,
)
from openflash.runtime.stopping import stop_line
from openflash.server import heap
from openflash.server.access_log import AccessLog, CallLog
from openflash.server.dashboard_routes import add_dashboard_routes
from openflash.server.fast_path import FastPath, FlashApp, crashed_response, invalid_response
from openflash.server.jobs import JobJournal
from openflash.server.metrics import CONTENT_TYPE, Metrics
from openflash.server.previous_workers import WorkerNotes
from openflash.server.responses import JSONResponse
from openflash.server.security import DEFAULT_MAX_BODY, SecurityMiddleware
from openflash.server.state import ServerState
from openflash.workers import events

__all__ = ["create_app"]

_SWAGGER_FILES = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}


def create_app(
    root: Path,
    *,
    api_key: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    reload: bool = False,
    quiet: bool = False,
    only: frozenset[str] | None = None,
    log_format: str = "text",
    allowed_hosts: frozenset[str] | None = None,
) -> FastAPI:
    """Discover the project at ``root`` and build its app (routes are live at once).

    ``log_format`` is how calls and runtime events are logged to stderr: text or json.
    ``allowed_hosts``: the only ``Host`` names answered (None: any), see security.py.
    """
    journal = JobJournal(root.resolve() / ".flash" / "jobs.sqlite3")
    heap.large_frees_to_os()  # dropped large results leave the server's RSS
    log = CallLog(log_format, quiet=quiet)
    state = ServerState(root, journal, quiet=quiet, only=only, log=log)
    metrics = Metrics(lambda: _workers(state), lambda: get_runtime().preparer.store)

    def job_ended(fields: dict[str, Any]) -> None:
        log.job(fields)
        metrics.call(fields)

    def runtime_event(kind: str, fields: dict[str, Any]) -> None:
        if kind == "worker_started" and fields.get("node") == "local":
            workers.started(int(fields["pid"]))  # a process of this machine
        if kind == "worker_output":  # the dashboard's, not the log's: the terminal has the line
            state.output.add(
                fields["endpoint"], fields.get("pid"), fields["stream"], fields["line"]
            )
        else:
            log.runtime_event(kind, fields)
            metrics.runtime_event(kind, fields)
        state.calls.touch()  # the live dashboard shows it

    def call_ended(fields: dict[str, Any]) -> None:
        log.call(fields)
        metrics.call(fields)

    workers = WorkerNotes(root.resolve() / ".flash")
    state.on_job = job_ended
    state.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        run_on_current_loop()  # pools on the server's loop: requests reach them directly
        get_runtime().progress = None  # builds' steps are logged as build_step events
        unsubscribe = events.subscribe(runtime_event)
        state.say(f"serving {len(state.endpoints())} endpoint(s) from {state.root}")
        # The previous server's workers are gone before its jobs run again.
        killed, left = workers.end_previous()
        if killed:
            state.say(f"stopped {len(killed)} worker(s) the previous server left running")
        if left:
            state.say(f"worker(s) {left} of the previous server would not stop", "warning")
        recovered = state.jobs.recover()
        if recovered:
            state.say(f"resumed {len(recovered)} job(s) the previous server left unfinished")
        state.prepare()
        heap.settle()  # what the server holds from now on is never scanned by the collector
        watcher = None
        if reload:
            from openflash.server.reload import watch

            watcher = asyncio.get_running_loop().create_task(watch(state, app))
        loop = asyncio.get_running_loop()
        stopped = False

        def stop() -> None:
            """A stop (Ctrl-C, SIGTERM: `flash run` calls it from its signal handler): what runs
            is killed with its process groups and said in one line; calls in flight fail now
            instead of holding the server's graceful shutdown (their workers stop with it)."""
            nonlocal stopped
            if stopped:
                return
            stopped = True
            state.jobs.stopping()  # jobs the stop interrupts are left for the next server
            line = stop_line(current(), "flash run stopping")
            _subprocess.stop_all()
            if line:
                state.say(line.removeprefix("openflash: "), "warning")
            loop.call_soon_threadsafe(
                lambda: closing.append(loop.create_task(shutdown_current_loop()))
            )

        closing: list[asyncio.Task[None]] = []
        app.state.stop = stop
        try:
            yield
        finally:
            stop()
            await asyncio.sleep(0)  # the close stop() scheduled has started
            await asyncio.gather(*closing, return_exceptions=True)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await state.jobs.close()
            state.journal.close()
            await shutdown_current_loop()
            unsubscribe()
            heap.unsettle()

    app = FlashApp(
        title=f"openflash: {state.root.name}",
        description="The endpoints of this project, served by `flash run`.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.flash = state
    app.add_middleware(
        SecurityMiddleware, api_key=api_key, max_body=max_body, allowed_hosts=allowed_hosts
    )
    app.add_middleware(AccessLog, report=call_ended)  # outside: refused calls are logged too
    # /runsync, /run and /status, answered before FastAPI with the same checks (fast_path.py).
    checks = SecurityMiddleware(
        app, api_key=api_key, max_body=max_body, allowed_hosts=allowed_hosts
    )
    app.fast = FastPath(app, checks, call_ended, lambda: state.router)
    app.state.flash_stopping = lambda: False  # `flash run` tells the live feed of a stop
    _add_fixed_routes(app, state)
    add_dashboard_routes(app, state)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text() -> Response:
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    state.install(app)
    return app


def _add_fixed_routes(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_response(exc)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return crashed_response(exc)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "endpoints": len(state.endpoints())}

    @app.get("/ping", include_in_schema=False)
    async def ping() -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="/_flash/swagger/swagger-ui-bundle.js",
            swagger_css_url="/_flash/swagger/swagger-ui.css",
            swagger_favicon_url="/_flash/swagger/favicon-32x32.png",
        )

    @app.get("/_flash/swagger/{name}", include_in_schema=False)
    async def swagger_asset(name: str) -> FileResponse:
        if name not in _SWAGGER_FILES:
            raise HTTPException(404)
        asset = resources.files("fastapi_swagger.resources") / name
        with resources.as_file(asset) as path:
            return FileResponse(path)


def _workers(state: ServerState) -> dict[str, dict[str, int]]:
    """Each served endpoint's workers by state (busy: ready and running a call)."""
    runtime = get_runtime()
    counts: dict[str, dict[str, int]] = {}
    for endpoint in state.endpoints():
        stats = runtime.pool_stats(endpoint) or {}
        detail = stats.get("detail") or []
        states = counts.setdefault(endpoint.name, {})
        for worker in detail if isinstance(detail, list) else []:
            name = "busy" if worker["state"] == "ready" and worker["calls"] else worker["state"]
            states[name] = states.get(name, 0) + 1
    return counts
