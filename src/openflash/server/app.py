"""The FastAPI app of ``flash run``: the project's routes, jobs, docs, health and dashboard.

/health, /ping              liveness; never touches a worker
/docs, /openapi.json        Swagger UI from a package's files (works offline)
/                           the dashboard; /_flash/state is what it shows, as JSON
/metrics                    Prometheus metrics (metrics.py)

Each call is logged to the terminal (access_log.py), as text or JSON lines.
everything else             the project's endpoints (routes.py), swapped in place on reload
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from openflash.deps.namespace_mode import layer_mode
from openflash.runtime.process import get_runtime, run_on_current_loop, shutdown_current_loop
from openflash.server.access_log import AccessLog, CallLog
from openflash.server.jobs import FINAL, JobJournal
from openflash.server.metrics import CONTENT_TYPE, Metrics
from openflash.server.responses import JSONResponse
from openflash.server.security import DEFAULT_MAX_BODY, SecurityMiddleware
from openflash.server.state import ServerState
from openflash.workers import events

__all__ = ["create_app"]

DASHBOARD = Path(__file__).with_name("dashboard")
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
    log = CallLog(log_format, quiet=quiet)
    state = ServerState(root, journal, quiet=quiet, only=only, log=log)
    metrics = Metrics(lambda: _workers(state), lambda: get_runtime().preparer.store)

    def job_ended(fields: dict[str, Any]) -> None:
        log.job(fields)
        metrics.call(fields)

    def runtime_event(kind: str, fields: dict[str, Any]) -> None:
        log.runtime_event(kind, fields)
        metrics.runtime_event(kind, fields)

    def call_ended(fields: dict[str, Any]) -> None:
        log.call(fields)
        metrics.call(fields)

    state.on_job = job_ended
    state.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        run_on_current_loop()  # pools on the server's loop: requests reach them directly
        unsubscribe = events.subscribe(runtime_event)
        state.say(f"serving {len(state.endpoints())} endpoint(s) from {state.root}")
        recovered = state.jobs.recover()
        if recovered:
            state.say(f"resumed {len(recovered)} job(s) the previous server left unfinished")
        state.prepare()
        watcher = None
        if reload:
            from openflash.server.reload import watch

            watcher = asyncio.get_running_loop().create_task(watch(state, app))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await state.jobs.close()
            state.journal.close()
            await shutdown_current_loop()
            unsubscribe()

    app = FastAPI(
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
    _add_fixed_routes(app, state)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text() -> Response:
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    state.install(app)
    return app


def _add_fixed_routes(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse(
            {"error": "the request does not match the function's parameters", "detail": errors},
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)

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
        return await asyncio.get_running_loop().run_in_executor(None, _snapshot, state)


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


def _hardware(resource: Any, status: dict[str, Any]) -> str:
    """What the endpoint runs on: its CPU type, its GPUs, or the CPU where GPU workers got none
    (a machine without a GPU: they fell back, with a warning)."""
    if resource.cpu_instance:
        return f"cpu {resource.cpu_instance.value}"
    workers = (status.get("pool") or {}).get("detail") or []
    if workers and not any(w.get("gpus") for w in workers):
        return f"{resource.gpu_count} GPU asked, running on the CPU (no GPU here)"
    return f"{resource.gpu_count} GPU"


def _snapshot(state: ServerState) -> dict[str, Any]:
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
                **status,
            }
        )
    recent = []
    for call in reversed(state.recent):
        item = dict(call)
        feed = item.pop("feed", None)
        if feed is not None and feed.progress is not None:
            item["progress"] = feed.progress  # the latest openflash.progress of a /run job
        if item["kind"] == "run":
            job = state.journal.get(item["id"])
            if job is not None:
                item["status"], item["attempt"] = job.status, job.attempt
                if job.status in FINAL and job.finished and job.started:
                    item["seconds"] = job.finished - job.started
        recent.append(item)
    return {
        "project": str(state.root),
        "time": time.time(),
        "endpoints": endpoints,
        "recent": recent[:50],
        "failures": [
            {"file": str(f.file.relative_to(state.root)), "traceback": f.traceback}
            for f in state.project.failures
        ],
        "skipped": [str(f.relative_to(state.root)) for f in state.project.skipped],
        "events": list(state.events)[-20:],
        "templates": runtime.templates(),
        "layer_mode": asdict(layer_mode(runtime.preparer.settings.namespaces)),
    }
