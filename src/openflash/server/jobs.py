"""Async jobs (``/run``), journaled in SQLite so that none vanishes.

Every job is written before it is acknowledged, and every change of state is written as it
happens. When the server starts it reads the journal back: finished jobs keep their output, and a
job the previous server left queued or running is run again once; if it is found unfinished a
second time it is marked FAILED with the reason. ``status`` answers from the journal.

Status names are Runpod's: IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FINAL", "Job", "JobJournal", "JobRunner"]

FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
#: How many times a job interrupted by a server stop is started again.
MAX_ATTEMPTS = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created);
"""


@dataclass(frozen=True)
class Job:
    id: str
    route: str
    input: dict[str, Any]
    status: str
    output: Any = None
    error: str | None = None
    attempts: int = 0
    created: float = 0.0
    started: float | None = None
    finished: float | None = None

    def to_response(self) -> dict[str, Any]:
        """The job as Runpod's status API shows it."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = round((self.started - self.created) * 1000)
        if self.finished is not None and self.started is not None:
            body["executionTime"] = round((self.finished - self.started) * 1000)
        if self.status == "COMPLETED":
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


class JobJournal:
    """The SQLite journal; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add(self, route: str, payload: dict[str, Any]) -> Job:
        job = Job(uuid.uuid4().hex, route, payload, "IN_QUEUE", created=time.time())
        self._run(
            "INSERT INTO jobs (id, route, input, status, created) VALUES (?, ?, ?, ?, ?)",
            (job.id, route, json.dumps(payload), job.status, job.created),
        )
        return job

    def started(self, job_id: str) -> None:
        self._run(
            "UPDATE jobs SET status='IN_PROGRESS', started=?, attempts=attempts+1 WHERE id=?",
            (time.time(), job_id),
        )

    def finish(
        self, job_id: str, status: str, *, output: Any = None, error: str | None = None
    ) -> None:
        self._run(
            "UPDATE jobs SET status=?, output=?, error=?, finished=? WHERE id=? AND status NOT IN "
            "('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT')",
            (status, json.dumps(output), error, time.time(), job_id),
        )

    def requeue(self, job_id: str) -> None:
        self._run("UPDATE jobs SET status='IN_QUEUE', started=NULL WHERE id=?", (job_id,))

    def get(self, job_id: str) -> Job | None:
        rows = self._run(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,))
        return _job(rows[0]) if rows else None

    def unfinished(self) -> list[Job]:
        rows = self._run(
            f"SELECT {_COLUMNS} FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS') "
            "ORDER BY created"
        )
        return [_job(r) for r in rows]

    def recent(self, limit: int = 50) -> list[Job]:
        rows = self._run(f"SELECT {_COLUMNS} FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
        return [_job(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


_COLUMNS = "id, route, input, status, output, error, attempts, created, started, finished"


def _job(row: tuple[Any, ...]) -> Job:
    output = json.loads(row[4]) if row[4] is not None else None
    return Job(
        row[0], row[1], json.loads(row[2]), row[3], output, row[5], row[6], row[7], row[8], row[9]
    )


#: Runs a job's input on its route; returns (status, output, error).
Invoker = Callable[[dict[str, Any]], Awaitable[tuple[str, Any, str | None]]]


class JobRunner:
    """Runs journaled jobs as tasks on the server's event loop."""

    def __init__(self, journal: JobJournal, resolve: Callable[[str], Invoker | None]) -> None:
        self.journal = journal
        self.resolve = resolve
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.closing = False

    def submit(self, route: str, payload: dict[str, Any]) -> Job:
        job = self.journal.add(route, payload)
        self._start(job)
        return job

    def recover(self) -> list[Job]:
        """Start again what a previous server left unfinished (once); fail what failed twice."""
        recovered = []
        for job in self.journal.unfinished():
            if job.attempts >= MAX_ATTEMPTS:
                self.journal.finish(
                    job.id,
                    "FAILED",
                    error=(
                        f"the server stopped while this job was running, {job.attempts} times; "
                        "it is not started again"
                    ),
                )
            elif self.resolve(job.route) is None:
                self.journal.finish(
                    job.id,
                    "FAILED",
                    error=(f"the server restarted and no longer serves {job.route}"),
                )
            else:
                self.journal.requeue(job.id)
                self._start(job)
                recovered.append(job)
        return recovered

    def cancel(self, job_id: str) -> Job | None:
        task = self.tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
            self.journal.finish(job_id, "CANCELLED", error="cancelled by request")
        return self.journal.get(job_id)

    def _start(self, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job))
        self.tasks[job.id] = task
        task.add_done_callback(lambda _t: self.tasks.pop(job.id, None))

    async def _run(self, job: Job) -> None:
        invoker = self.resolve(job.route)
        if invoker is None:
            self.journal.finish(job.id, "FAILED", error=f"no route {job.route} is served")
            return
        self.journal.started(job.id)
        try:
            status, output, error = await invoker(job.input)
        except asyncio.CancelledError:
            if self.closing:  # the server is stopping: the next one runs it again
                self.journal.requeue(job.id)
            else:
                self.journal.finish(job.id, "CANCELLED", error="cancelled")
            raise
        except Exception as e:  # a job records its failure, never loses it
            status, output, error = "FAILED", None, f"{type(e).__name__}: {e}"
        self.journal.finish(job.id, status, output=output, error=error)

    async def close(self) -> None:
        self.closing = True
        for task in list(self.tasks.values()):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=5)
