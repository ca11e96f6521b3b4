"""What a running dev server knows: the project, its routes, jobs, recent calls and events.

``load`` discovers the project and builds its routes; ``reload`` does it again after a file
changed, swapping the routes in place. Endpoints are prepared in the background as soon as they
are known (a dependency conflict shows in the terminal and on the dashboard before any call), and
the pools of endpoints whose dependencies or config changed are replaced; the others keep their
warm workers.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fastapi import APIRouter, FastAPI

from openflash import _subprocess
from openflash.project import Project, discover
from openflash.runtime.definitions import EndpointDef
from openflash.runtime.process import get_runtime
from openflash.server.access_log import CallLog, error_summary
from openflash.server.call_records import CallRecords, WorkerOutput
from openflash.server.endpoint_health import SyncCalls
from openflash.server.jobs import Invoker, JobJournal, JobRunner
from openflash.server.routes import JobInvoker, build_router, constructor_warnings
from openflash.workers import events

__all__ = ["ServerState"]


@dataclass
class ServerState:
    root: Path
    journal: JobJournal
    project: Project = field(init=False)
    router: APIRouter = field(default_factory=APIRouter)
    invokers: dict[str, JobInvoker] = field(default_factory=dict)
    #: The last calls with their detail, and what workers printed (server/call_records.py).
    calls: CallRecords = field(default_factory=CallRecords)
    output: WorkerOutput = field(default_factory=WorkerOutput)
    events: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=100)
    )
    jobs: JobRunner = field(init=False)
    #: What runsync calls leave: outcomes for /health, answers for /status (endpoint_health.py).
    sync_calls: SyncCalls = field(default_factory=SyncCalls)
    quiet: bool = False
    #: Serve only these endpoints (an image made by `flash build` serves one).
    only: frozenset[str] | None = None
    #: The terminal's log (server/access_log.py), and what hears of each /run job that ends.
    log: CallLog | None = None
    on_job: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.project = Project(self.root)
        self.jobs = JobRunner(self.journal, self._job_invoker, say=self.say)

    def say(self, message: str, level: str = "info") -> None:
        """Tell the terminal and the dashboard."""
        self.events.append({"time": time.time(), "level": level, "message": message})
        self.calls.touch()
        if self.log is not None and self.log.fmt == "json":
            self.log.message(message, level)
        elif not self.quiet:
            print(f"flash: {message}", file=sys.stderr, flush=True)

    def record(self, call: dict[str, Any]) -> None:
        self.calls.add(call)
        self.sync_calls.note(call)
        events.note(**{k: call[k] for k in ("id", "endpoint", "status") if k in call})

    def _job_invoker(self, route: str) -> Invoker | None:
        """The route's job invoker, telling ``on_job`` how each job ended."""
        invoker = self.invokers.get(route)
        if invoker is None:
            return None
        endpoint = next((r.endpoint_name for r in self.project.queue if r.path == route), None)
        request = events.call_note.get()  # the /run request's note: it holds the job's id

        async def run(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
            own: dict[str, Any] = {}
            token, started = events.call_note.set(own), time.perf_counter()
            status, error = "FAILED", None
            outer, handed = events.call_handed_back.get(), []  # the runner's: it sends it again

            def handed_back() -> None:
                handed.append(True)
                events.taken(outer)

            handing = events.call_handed_back.set(handed_back)
            try:
                status, output, error = await invoker(payload)
                return status, output, error
            except BaseException as e:
                cancelled = isinstance(e, asyncio.CancelledError)
                status, error = ("CANCELLED" if cancelled else "FAILED"), str(e) or type(e).__name__
                raise
            finally:
                events.call_note.reset(token)
                events.call_handed_back.reset(handing)
                first, hint = error_summary(error) if status != "COMPLETED" else ("", "")
                job_id = (request or {}).get("id")
                if job_id:
                    self.calls.update(
                        str(job_id),
                        worker_pid=own.get("worker_pid"),
                        queue_wait=own.get("queue_wait"),
                    )
                left = handed or (self.jobs.closing and status != "COMPLETED")  # not an end
                if self.on_job is not None and not left:
                    self.on_job(
                        {
                            "job_id": job_id,
                            "route": route,
                            "endpoint": endpoint,
                            "status": status,
                            "seconds": time.perf_counter() - started,
                            "worker_pid": own.get("worker_pid"),
                            "queue_wait": own.get("queue_wait"),
                            "error": first or None,
                            "hint": hint or None,
                        }
                    )

        return run

    def load(self) -> Project:
        """Discover the project (again) and build its routes."""
        for name in self.project.modules.values():
            sys.modules.pop(name, None)  # import the project afresh, as it is on disk now
        with contextlib.redirect_stdout(_Prefixed(sys.stdout, "[import] ")):
            project = discover(self.root)  # what the files print as they import, prefixed
        if self.only is not None:
            project.queue = [r for r in project.queue if r.endpoint_name in self.only]
            project.lb = [r for r in project.lb if r.endpoint_name in self.only]
        for failure in project.failures:
            self.say(
                f"{failure.file.relative_to(self.root)} failed to import; its endpoints are "
                f"not served:\n{failure.traceback.rstrip()}",
                "error",
            )
        for warning in constructor_warnings(project):
            self.say(warning, "warning")
        router, invokers = build_router(project, self.jobs, self.record, self.sync_calls)
        self.project, self.router = project, router
        self.invokers.clear()
        self.invokers.update(invokers)
        return project

    def install(self, app: FastAPI, previous: APIRouter | None = None) -> None:
        """Put the current routes in ``app`` (in place of ``previous``'s)."""
        if previous is not None:
            stale = {id(r) for r in previous.routes}
            app.router.routes[:] = [r for r in app.router.routes if id(r) not in stale]
        app.router.routes.extend(self.router.routes)
        app.openapi_schema = None

    def reload(self, app: FastAPI) -> None:
        previous_router = self.router
        before = {e.name: _fingerprint(e) for e in self.endpoints()}
        self.load()
        self.install(app, previous_router)
        after = {e.name: _fingerprint(e) for e in self.endpoints()}
        changed = sorted(n for n, f in after.items() if n in before and before[n] != f)
        added = sorted(set(after) - set(before))
        self.say(
            f"reloaded: {len(self.project.queue)} queue and {len(self.project.lb)} "
            f"load-balanced routes"
            + (f"; new: {', '.join(added)}" if added else "")
            + (f"; changed dependencies or config: {', '.join(changed)}" if changed else "")
        )
        self.prepare()

    def endpoints(self) -> list[EndpointDef]:
        """One definition per endpoint name (the first route's)."""
        seen: dict[str, EndpointDef] = {}
        for route in self.project.queue:
            seen.setdefault(route.endpoint_name, route.handle.endpoint)
        for lb in self.project.lb:
            if not lb.route.local:  # a local handler runs in this process: no workers
                seen.setdefault(lb.endpoint_name, lb.route.handle.endpoint)
        return list(seen.values())

    def prepare(self) -> None:
        """Build every endpoint's environment in the background; retire replaced pools."""
        endpoints = self.endpoints()
        if not endpoints:
            return
        future = get_runtime().refresh(endpoints)

        def done(f: concurrent.futures.Future[list[str]]) -> None:
            try:
                retired = f.result()
            except (Exception, concurrent.futures.CancelledError) as e:  # reported per endpoint
                if not f.cancelled() and not _subprocess.stopping():  # a stop says so itself
                    self.say(f"preparing endpoints failed: {e}", "error")
                return
            for endpoint in endpoints:
                build = get_runtime().build_status(endpoint)
                if build["state"] == "failed" and not _subprocess.stopping():
                    self.say(f"endpoint {endpoint.name!r} cannot start:\n{build['error']}", "error")
            if retired:
                self.say(f"replaced the workers of {', '.join(sorted(set(retired)))}")

        future.add_done_callback(done)


def _fingerprint(endpoint: EndpointDef) -> tuple[object, ...]:
    return (
        endpoint.dependencies,
        endpoint.system_dependencies,
        endpoint.pool_config(),
        tuple(sorted((endpoint.resource.env or {}).items())),
    )


class _Prefixed(io.TextIOBase):
    """A text stream that writes each line to ``out`` with ``prefix`` before it."""

    def __init__(self, out: TextIO, prefix: str) -> None:
        self.out, self.prefix, self.pending = out, prefix, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.out.write(f"{self.prefix}{line}\n")
        self.out.flush()
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.out.write(f"{self.prefix}{self.pending}\n")
            self.pending = ""
        self.out.flush()
