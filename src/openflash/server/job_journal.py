"""The job journal: ``/run`` jobs in SQLite (``.flash/jobs.sqlite3``, private to its user:
server/journal_files.py), each written before it is acknowledged and each change of state as it
happens; read back by the next server (server/jobs.py's ``JobRunner.recover``). ``Job`` is one
row; status names are Runpod's.

A result's JSON larger than ``results.INLINE_BYTES`` is not put in its row: it is written to a
file of its own, ``.flash/results/<job id>.json`` (0600 in a 0700 folder), before the row says
the job ended, and removed with the row (by retention, or a retry). So the journal never holds a
large result in its pages (which SQLite would keep as free pages after the row went: the file
would not shrink), and ``/status`` sends the file as it is (``get(load=False)``). A result file
no row names (a server killed between writing it and the row) is removed when the journal opens.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openflash.server import results, retention
from openflash.server.journal_files import private_file, private_folder

__all__ = ["FINAL", "MAX_ATTEMPTS", "Job", "JobJournal"]

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
    "output_size": "INTEGER",  # set where the output is in its result file
    "retried": "INTEGER NOT NULL DEFAULT 0",  # times /retry made it a new run (/health counts)
}


@dataclass(frozen=True)
class Job:
    id: str
    route: str
    input: dict[str, Any]
    status: str
    #: the output's value; ``results.Stored`` where it is in its file and was not loaded
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
        self.results = path.parent / "results"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        private_folder(self.results)
        kept = {r[0] for r in self._run("SELECT id FROM jobs WHERE output_size IS NOT NULL")}
        for leftover in self.results.iterdir():  # written by a server killed before its row
            if leftover.name.removesuffix(".json") not in kept:
                leftover.unlink()

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
            "call_attempt=1 WHERE id=? AND status='IN_QUEUE'",  # once per start of the job
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
        return [self._job(r, True) for r in rows]

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
        for row in rows:
            self._drop_result(row[0])
        return [r[0] for r in rows]

    def tombstone(self, job_id: str) -> tuple[str, float, float] | None:
        """(route, ended, removed) of a job removed by ``expire``, or None."""
        rows = self._run("SELECT route, finished, removed FROM expired WHERE id=?", (job_id,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def finish(
        self, job_id: str, status: str, *, output: Any = None, error: str | None = None
    ) -> None:
        """End a job (unless it ended already); ``output`` is a value, or its JSON as
        ``results.Encoded`` (written as it is; to its own file when large). Raises OSError or
        sqlite3.Error where it cannot be written (a full disk: the error says so)."""
        text: str | None = None
        size: int | None = None
        data = output.data if isinstance(output, results.Encoded) else None
        large = data is not None and len(data) > results.INLINE_BYTES
        if data is not None and not large:
            text = data.decode()
        elif data is None:
            text = json.dumps(output)
        with self._lock:  # so that nothing ends the job between the check and the update
            if data is not None and large:
                ended = self._db.execute(
                    "SELECT 1 FROM jobs WHERE id=? AND status NOT IN ('IN_QUEUE', 'IN_PROGRESS')",
                    (job_id,),
                ).fetchall()
                if ended:  # ended already (cancelled): its outcome, and any file, stay
                    return
                size = len(data)
                self._write_result(job_id, data)
            written = False
            try:
                written = (
                    self._db.execute(
                        "UPDATE jobs SET status=?, output=?, output_size=?, error=?, finished=? "
                        "WHERE id=? AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', "
                        "'TIMED_OUT')",
                        (status, text, size, error, time.time(), job_id),
                    ).rowcount
                    > 0
                )
            finally:
                if size is not None and not written:  # no row (or the update failed)
                    self._drop_result(job_id)

    def requeue(self, job_id: str, *, reopen: bool = False) -> None:
        """Queue a job again (``reopen``: an ended one, its outcome and its count of starts
        cleared, for a retry: a new run, as Runpod's /retry requeues the job afresh)."""
        cleared = (
            ", output=NULL, output_size=NULL, error=NULL, finished=NULL, attempts=0,"
            " call_attempt=0, retried=retried+1"
            if reopen
            else ""
        )
        self._run(f"UPDATE jobs SET status='IN_QUEUE', started=NULL{cleared} WHERE id=?", (job_id,))
        if reopen:
            self._drop_result(job_id)

    def get(self, job_id: str, *, load: bool = True) -> Job | None:
        """The job ``job_id``; a large output is read from its file, or (``load=False``) left
        there as ``results.Stored``, for ``results.respond`` to send as it is."""
        rows = self._run(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,))
        return self._job(rows[0], load) if rows else None

    def result_file(self, job_id: str) -> Path:
        """Where a large output of ``job_id`` is kept."""
        return self.results / f"{job_id}.json"

    def _write_result(self, job_id: str, data: bytes) -> None:
        path = self.result_file(job_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # on disk before the row says the job ended
        except OSError as e:
            with contextlib.suppress(OSError):
                path.unlink()
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(e.errno, f"the disk is full writing {path}") from e
            raise

    def _drop_result(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.result_file(job_id).unlink()

    def _job(self, row: tuple[Any, ...], load: bool) -> Job:
        size, file, error = row[13], self.result_file(row[0]), row[5]
        output: Any = None
        if size is None:
            output = json.loads(row[4]) if row[4] is not None else None
        elif not file.is_file():  # removed by hand: said, rather than a 500 at each read
            error = f"the job's result ({size} bytes) was kept in {file}, which is gone"
        elif load:
            output = json.loads(file.read_bytes())
        else:
            output = results.Stored(file, size)
        return Job(row[0], row[1], json.loads(row[2]), row[3], output, error, *row[6:13])

    def counts(self, route: str) -> tuple[dict[str, int], int]:
        """``route``'s jobs by status, and how many were started more than once (run again after
        a crash, under ``retries``, or by ``/retry``)."""
        sql = (
            "SELECT status, count(*), sum(attempts > 1 OR call_attempt > 1 OR retried > 0) "
            "FROM jobs WHERE route=?"
        )
        rows = self._run(sql + " GROUP BY status", (route,))
        return {status: n for status, n, _ in rows}, sum(r or 0 for _, _, r in rows)

    def queued(self, route: str) -> list[str]:
        """The ids of ``route``'s jobs that have not started."""
        sql = "SELECT id FROM jobs WHERE route=? AND status='IN_QUEUE'"
        return [r[0] for r in self._run(sql, (route,))]

    def unfinished(self) -> list[Job]:
        rows = self._run(
            f"SELECT {_COLUMNS} FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS') "
            "ORDER BY created"
        )
        return [self._job(r, True) for r in rows]

    def recent(self, limit: int = 50) -> list[Job]:
        rows = self._run(f"SELECT {_COLUMNS} FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
        return [self._job(r, True) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


_COLUMNS = (
    "id, route, input, status, output, error, attempts, created, started, finished, webhook, "
    "webhook_state, call_attempt, output_size"
)
