"""Async jobs (``/run``), journaled in SQLite so that none vanishes.

Every job is written before it is acknowledged, and every change of state is written as it
happens. A job is IN_QUEUE until a worker takes its call, then IN_PROGRESS: its start is counted
then. When the server starts it reads the journal back: finished jobs keep their output, a job
left queued is queued again, and one the previous server left running is run again once; if it
was started twice it is marked FAILED with the reason. A result that cannot be journaled (a full
disk) fails the job with the reason. ``status`` answers from the journal.

A job may name a webhook (server/webhooks.py): when it ends, its status body is POSTed there, in
a task of its own; a delivery the server could not finish before it stopped is made by the next.
Finished jobs are removed ``FLASH_JOB_TTL`` after their end (server/retention.py), leaving a
tombstone. ``attempt`` is the number of the job's call under its endpoint's ``retries`` (1, then
2, ...: api/retries.py); ``attempts`` counts the starts of the job across server restarts.

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

from openflash.api.retries import attempt_sink
from openflash.server import retention, webhooks
from openflash.server.journal_files import private_file, private_folder
from openflash.workers import events

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
CREATE TABLE IF NOT EXISTS expired (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    finished REAL NOT NULL,
    removed REAL NOT NULL
);
"""
#: Columns added after the first journals were written (added to those when opened).
_ADDED = {
    "webhook": "TEXT",
    "webhook_state": "TEXT",  # pending, delivered or failed
    "call_attempt": "INTEGER NOT NULL DEFAULT 0",
}


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
    webhook: str | None = None
    webhook_state: str | None = None
    attempt: int = 0

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
        if self.attempt:
            body["attempt"] = self.attempt
        return body


class JobJournal:
    """The SQLite journal; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        private_folder(path.parent)  # 0700, and its files 0600: nobody else writes jobs in
        for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
            private_file(path.with_name(name), create=name == path.name)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add(self, route: str, payload: dict[str, Any], webhook: str | None = None) -> Job:
        state = "pending" if webhook else None
        job = Job(
            uuid.uuid4().hex, route, payload, "IN_QUEUE", created=time.time(), webhook=webhook,
            webhook_state=state,
        )  # fmt: skip
        self._run(
            "INSERT INTO jobs (id, route, input, status, created, webhook, webhook_state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job.id, route, json.dumps(payload), job.status, job.created, webhook, state),
        )
        return job

    def started(self, job_id: str) -> None:
        self._run(
            "UPDATE jobs SET status='IN_PROGRESS', started=?, attempts=attempts+1, "
            "call_attempt=1 WHERE id=?",
            (time.time(), job_id),
        )

    def attempt(self, job_id: str, number: int) -> None:
        """The job's call is being sent again under its retries: this is attempt ``number``."""
        self._run("UPDATE jobs SET call_attempt=? WHERE id=?", (number, job_id))

    def webhook_ended(self, job_id: str, state: str) -> None:
        self._run("UPDATE jobs SET webhook_state=? WHERE id=?", (state, job_id))

    def pending_webhooks(self) -> list[Job]:
        """Ended jobs whose webhook was not delivered yet (a server stopped during it)."""
        rows = self._run(
            f"SELECT {_COLUMNS} FROM jobs WHERE webhook_state='pending' AND status IN "
            "('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT') ORDER BY finished"
        )
        return [_job(r) for r in rows]

    def expire(self, before: float) -> list[str]:
        """Remove the jobs that ended before ``before`` (their webhooks done), leaving
        tombstones; forget tombstones older than retention.TOMBSTONE_S. Returns the ids."""
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    "SELECT id, route, finished FROM jobs WHERE finished < ? AND status IN "
                    "('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT') AND "
                    "(webhook_state IS NULL OR webhook_state != 'pending')",
                    (before,),
                ).fetchall()
                db.executemany(
                    "INSERT OR REPLACE INTO expired (id, route, finished, removed) "
                    "VALUES (?, ?, ?, ?)",
                    [(r[0], r[1], r[2], now) for r in rows],
                )
                db.executemany("DELETE FROM jobs WHERE id=?", [(r[0],) for r in rows])
                db.execute("DELETE FROM expired WHERE removed < ?", (now - retention.TOMBSTONE_S,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return [r[0] for r in rows]

    def tombstone(self, job_id: str) -> tuple[str, float, float] | None:
        """(route, ended, removed) of a job removed by ``expire``, or None."""
        rows = self._run("SELECT route, finished, removed FROM expired WHERE id=?", (job_id,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

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


_COLUMNS = (
    "id, route, input, status, output, error, attempts, created, started, finished, webhook, "
    "webhook_state, call_attempt"
)


def _job(row: tuple[Any, ...]) -> Job:
    output = json.loads(row[4]) if row[4] is not None else None
    return Job(row[0], row[1], json.loads(row[2]), row[3], output, *row[5:])


#: Runs a job's input on its route; returns (status, output, error).
Invoker = Callable[[dict[str, Any]], Awaitable[tuple[str, Any, str | None]]]


class JobRunner:
    """Runs journaled jobs as tasks on the server's event loop; delivers their webhooks and
    removes them once expired."""

    def __init__(
        self,
        journal: JobJournal,
        resolve: Callable[[str], Invoker | None],
        *,
        ttl: float | None = None,
        webhook_policy: webhooks.WebhookPolicy | None = None,
        say: Callable[[str, str], None] | None = None,
    ) -> None:
        self.journal = journal
        self.resolve = resolve
        self.ttl = retention.job_ttl() if ttl is None else ttl
        self.webhook_policy = webhook_policy or webhooks.WebhookPolicy.from_env()
        self.say = say or (lambda message, level: None)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.deliveries: set[asyncio.Task[None]] = set()
        self.sweeper: asyncio.Task[None] | None = None
        self.closing = False

    def submit(self, route: str, payload: dict[str, Any], webhook: str | None = None) -> Job:
        job = self.journal.add(route, payload, webhook)
        self._start(job)
        return job

    def recover(self) -> list[Job]:
        """Start again what a previous server left unfinished (once); fail what failed twice;
        deliver the webhooks it left undelivered; start removing expired jobs."""
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
        for job in self.journal.pending_webhooks():
            self._deliver(job)
        if self.ttl > 0 and self.sweeper is None:
            self.sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return recovered

    def cancel(self, job_id: str) -> Job | None:
        task = self.tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
            self.journal.finish(job_id, "CANCELLED", error="cancelled by request")
        return self.journal.get(job_id)

    def expired(self, job_id: str, route: str, base: str) -> dict[str, Any] | None:
        """The 404 body for ``job_id`` if it was a job of ``route`` removed as expired."""
        tomb = self.journal.tombstone(job_id)
        if tomb is None or tomb[0] != route:
            return None
        body: dict[str, Any] = retention.expired_body(job_id, base, tomb[1], tomb[2], self.ttl)
        return body

    def sweep(self) -> list[str]:
        """Remove the jobs that ended more than ``ttl`` ago (none when ``ttl`` is 0)."""
        return self.journal.expire(time.time() - self.ttl) if self.ttl > 0 else []

    async def _sweep(self) -> None:
        while True:
            self.sweep()
            await asyncio.sleep(retention.sweep_interval(self.ttl))

    def _start(self, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job))
        self.tasks[job.id] = task

        def ended(_task: asyncio.Task[None]) -> None:
            self.tasks.pop(job.id, None)
            final = self.journal.get(job.id)
            if not self.closing and final is not None and final.status in FINAL:
                self._deliver(final)

        task.add_done_callback(ended)

    def _deliver(self, job: Job) -> None:
        if not job.webhook or job.webhook_state != "pending":
            return
        url, payload = job.webhook, job.to_response()

        async def delivery() -> None:
            ok = await webhooks.deliver(url, payload, self.webhook_policy, self.say)
            self.journal.webhook_ended(job.id, "delivered" if ok else "failed")

        task = asyncio.get_running_loop().create_task(delivery())
        self.deliveries.add(task)
        task.add_done_callback(self.deliveries.discard)

    async def _run(self, job: Job) -> None:
        invoker = self.resolve(job.route)
        if invoker is None:
            self.journal.finish(job.id, "FAILED", error=f"no route {job.route} is served")
            return
        taken = False

        def take() -> None:  # IN_PROGRESS, and an attempt, once a worker takes the job's call
            nonlocal taken
            if not taken:
                taken = True
                self.journal.started(job.id)

        events.call_taken.set(take)
        attempt_sink.set(lambda number: self.journal.attempt(job.id, number))
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
        self._end(job, status, output, error)

    def _end(self, job: Job, status: str, output: Any, error: str | None) -> None:
        """Journal the job's end; where its result cannot be (a full disk), fail it with the
        reason, so that it is never run again."""
        try:
            self.journal.finish(job.id, status, output=output, error=error)
            return
        except Exception as e:  # sqlite3's "database or disk is full", an unwritable value
            reason = (
                f"the job ended ({status}) but its result could not be journaled in "
                f"{self.journal.path} ({type(e).__name__}: {e}); it is not run again"
            )
        self.say(f"job {job.id} on {job.route}: {reason}", "error")
        self.journal.finish(job.id, "FAILED", error=reason)

    async def close(self) -> None:
        self.closing = True
        pending = [*self.tasks.values(), *self.deliveries]
        if self.sweeper is not None:
            pending.append(self.sweeper)
        for task in pending:  # a delivery cut short stays pending: the next server makes it
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
