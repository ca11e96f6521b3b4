"""The job journal and runner: nothing vanishes, across restarts too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from openflash.server.jobs import MAX_ATTEMPTS, JobJournal, JobRunner
from openflash.workers import events


def _taken() -> None:
    """What the pool does when a worker takes the job's call."""
    events.taken(events.call_taken.get())


async def echo(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
    _taken()
    await asyncio.sleep(payload.get("sleep", 0))
    return "COMPLETED", {"echo": payload["value"]}, None


def test_jobs_run_and_are_journaled(tmp_path: Path) -> None:
    async def main() -> None:
        journal = JobJournal(tmp_path / "jobs.sqlite3")
        runner = JobRunner(journal, {"/r": echo}.get)
        job = runner.submit("/r", {"value": 1})
        assert journal.get(job.id).status == "IN_QUEUE"
        await asyncio.sleep(0.05)
        done = journal.get(job.id)
        assert done.status == "COMPLETED" and done.output == {"echo": 1}
        response = done.to_response()
        assert response["output"] == {"echo": 1} and "executionTime" in response

    asyncio.run(main())


def test_a_job_is_queued_until_a_worker_takes_it(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def queued(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
        await gate.wait()  # in the pool's queue
        _taken()
        _taken()  # a retry's call taken again: one start
        return "COMPLETED", payload["value"], None

    async def main() -> None:
        runner = JobRunner(JobJournal(tmp_path / "j.sqlite3"), {"/r": queued}.get)
        job = runner.submit("/r", {"value": 1})
        await asyncio.sleep(0.05)
        waiting = runner.journal.get(job.id)
        assert waiting.status == "IN_QUEUE" and waiting.attempts == 0
        gate.set()
        await asyncio.sleep(0.05)
        done = runner.journal.get(job.id)
        assert done.status == "COMPLETED" and done.attempts == 1 and done.started is not None

    asyncio.run(main())


def test_a_result_that_cannot_be_journaled_fails_the_job(tmp_path: Path) -> None:
    async def unwritable(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
        _taken()
        return "COMPLETED", {1j}, None  # not JSON

    said: list[tuple[str, str]] = []

    async def main() -> None:
        journal = JobJournal(tmp_path / "j.sqlite3")
        runner = JobRunner(
            journal, {"/r": unwritable}.get, say=lambda m, level: said.append((m, level))
        )
        job = runner.submit("/r", {})
        await asyncio.sleep(0.05)
        failed = journal.get(job.id)
        assert failed.status == "FAILED", failed
        assert "ended (COMPLETED) but its result could not be journaled" in failed.error
        assert "TypeError" in failed.error and "not run again" in failed.error
        assert said and said[0][1] == "error" and job.id in said[0][0]

    asyncio.run(main())


def test_cancel_marks_the_job(tmp_path: Path) -> None:
    async def main() -> None:
        runner = JobRunner(JobJournal(tmp_path / "j.sqlite3"), {"/r": echo}.get)
        job = runner.submit("/r", {"value": 1, "sleep": 10})
        await asyncio.sleep(0.05)
        assert runner.cancel(job.id).status == "CANCELLED"
        await asyncio.sleep(0.05)
        assert runner.journal.get(job.id).status == "CANCELLED"

    asyncio.run(main())


def test_unfinished_jobs_run_again_once_then_fail(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = JobJournal(path)
    interrupted = journal.add("/r", {"value": 7})
    journal.started(interrupted.id)  # a server died while running it
    twice = journal.add("/r", {"value": 8})
    for _ in range(MAX_ATTEMPTS):  # each server queued it again, then started it
        journal.requeue(twice.id)
        journal.started(twice.id)
        journal.started(twice.id)  # a second call of the same start counts once
    gone = journal.add("/gone", {"value": 9})
    journal.close()

    async def main() -> None:
        runner = JobRunner(JobJournal(path), {"/r": echo}.get)
        assert [j.id for j in runner.recover()] == [interrupted.id]
        await asyncio.sleep(0.05)
        assert runner.journal.get(interrupted.id).output == {"echo": 7}
        failed = runner.journal.get(twice.id)
        assert (
            failed.status == "FAILED"
            and "server stopped while this job was running" in failed.error
        )
        assert "no longer serves /gone" in runner.journal.get(gone.id).error

    asyncio.run(main())


def test_a_stopping_server_leaves_running_jobs_for_the_next(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"

    async def first() -> str:
        runner = JobRunner(JobJournal(path), {"/r": echo}.get)
        job = runner.submit("/r", {"value": 1, "sleep": 10})
        await asyncio.sleep(0.05)
        await runner.close()
        return job.id

    job_id = asyncio.run(first())
    assert JobJournal(path).get(job_id).status == "IN_QUEUE"


def _handed_back() -> None:
    """What a pool does when it gives back a call no worker took (workers/handover.py)."""
    events.taken(events.call_handed_back.get())


def test_a_job_handed_back_by_a_replaced_pool_goes_to_the_current_route(tmp_path: Path) -> None:
    routes: dict[str, Any] = {}

    async def old(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
        routes["/r"] = echo  # a reload: the route now reaches the new pool
        _handed_back()
        return "FAILED", None, "endpoint 'r' was replaced by a reload before a worker took it"

    routes["/r"] = old

    async def main() -> None:
        runner = JobRunner(JobJournal(tmp_path / "j.sqlite3"), routes.get)
        job = runner.submit("/r", {"value": 5})
        await asyncio.sleep(0.05)
        done = runner.journal.get(job.id)
        assert done.status == "COMPLETED" and done.output == {"echo": 5} and done.attempts == 1

    asyncio.run(main())


def test_a_stop_leaves_queued_and_running_jobs_for_the_next_server(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def queued(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
        await gate.wait()  # the stop comes while the call waits in its pool
        _handed_back()
        return "FAILED", None, "endpoint 'r' was shut down before a worker took the call"

    async def running(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
        _taken()
        await gate.wait()
        return "FAILED", None, "endpoint 'r' was shut down before the call finished"

    async def main() -> None:
        runner = JobRunner(JobJournal(tmp_path / "j.sqlite3"), {"/q": queued, "/r": running}.get)
        waiting, started = runner.submit("/q", {"value": 1}), runner.submit("/r", {"value": 2})
        await asyncio.sleep(0.05)
        runner.stopping()  # Ctrl-C: before the pools close
        gate.set()
        await asyncio.sleep(0.05)
        left = runner.journal.get(waiting.id), runner.journal.get(started.id)
        assert [(j.status, j.attempts, j.error) for j in left] == [
            ("IN_QUEUE", 0, None),  # never started: no start counted
            ("IN_QUEUE", 1, None),  # interrupted: run again by the next server, its start counted
        ]

    asyncio.run(main())


def test_a_retried_job_starts_afresh(tmp_path: Path) -> None:
    """Runpod's /retry requeues a failed job as a new run: the starts of its earlier runs are
    not held against it (else a retry of a job failed "stopped 2 times" failed at the next stop,
    without running again)."""
    path = tmp_path / "j.sqlite3"
    journal = JobJournal(path)
    job = journal.add("/r", {"value": 3, "sleep": 10})
    for _ in range(MAX_ATTEMPTS):  # two servers started it and stopped under it
        journal.requeue(job.id)
        journal.started(job.id)
    journal.close()

    async def fast(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
        return await echo({**payload, "sleep": 0})

    async def retried() -> None:
        runner = JobRunner(JobJournal(path), {"/r": echo}.get)
        assert runner.recover() == []
        assert "2 times" in (runner.journal.get(job.id).error or "")
        again = runner.retry(job.id)
        assert again is not None and again.status == "IN_QUEUE" and again.attempts == 0
        await asyncio.sleep(0.05)
        running = runner.journal.get(job.id)
        assert running.status == "IN_PROGRESS" and running.attempts == 1
        await runner.close()  # this server stops too, under the retried run

    async def restarted() -> None:
        runner = JobRunner(JobJournal(path), {"/r": fast}.get)
        assert [j.id for j in runner.recover()] == [job.id]  # run again, not failed
        await asyncio.sleep(0.05)
        done = runner.journal.get(job.id)
        assert done.status == "COMPLETED" and done.attempts == 2 and done.output == {"echo": 3}

    asyncio.run(retried())
    asyncio.run(restarted())


def test_an_old_journal_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # a journal written before webhooks and retention
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, route TEXT NOT NULL, input TEXT NOT NULL, "
            "status TEXT NOT NULL, output TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
            "created REAL NOT NULL, started REAL, finished REAL)"
        )
        db.execute(
            "INSERT INTO jobs (id, route, input, status, output, created) "
            "VALUES ('old', '/r', '{}', 'COMPLETED', '1', 0)"
        )
    journal = JobJournal(path)
    old = journal.get("old")
    assert old is not None and old.output == 1 and old.webhook is None and old.attempt == 0


def test_finished_jobs_expire_leaving_a_tombstone(tmp_path: Path) -> None:
    async def main() -> None:
        runner = JobRunner(JobJournal(tmp_path / "j.sqlite3"), {"/r": echo}.get, ttl=0.2)
        runner.recover()  # starts the sweep
        done = runner.submit("/r", {"value": 1})
        running = runner.submit("/r", {"value": 2, "sleep": 1.0})
        await asyncio.sleep(0.6)
        assert runner.journal.get(done.id) is None
        assert runner.journal.get(running.id).status == "IN_PROGRESS"  # never while running
        body = runner.expired(done.id, "/r", "/base")
        assert body["status"] == "EXPIRED" and "FLASH_JOB_TTL" in body["error"]
        assert runner.expired(done.id, "/other", "/other") is None
        assert runner.expired(running.id, "/r", "/base") is None
        await runner.close()

    asyncio.run(main())


def test_a_webhook_left_undelivered_is_delivered_by_the_next_server(tmp_path: Path) -> None:
    from openflash.server.webhooks import WebhookPolicy

    path = tmp_path / "j.sqlite3"
    journal = JobJournal(path)
    job = journal.add("/r", {"value": 1}, webhook="http://127.0.0.1:9/never")
    journal.finish(job.id, "COMPLETED", output=1)  # the server stopped before delivering
    journal.close()
    said: list[tuple[str, str]] = []

    async def main() -> None:
        runner = JobRunner(
            JobJournal(path),
            {"/r": echo}.get,
            ttl=0,
            webhook_policy=WebhookPolicy(attempts=2, delay=0.0),
            say=lambda message, level: said.append((message, level)),
        )
        runner.recover()
        while runner.deliveries:
            await asyncio.sleep(0.05)
        assert runner.journal.get(job.id).webhook_state == "failed"
        await runner.close()

    asyncio.run(main())
    assert [level for _, level in said] == ["warning", "error"]
    assert "attempt 1 of 2" in said[0][0] and "given up" in said[1][0]


def test_webhook_urls_are_checked_and_redacted() -> None:
    from openflash.server.webhooks import redact, webhook_error

    assert webhook_error("https://example.com/done") is None
    assert "not ftp" in webhook_error("ftp://example.com/x")
    assert "no host" in webhook_error("http:///x")
    assert "must be a URL" in webhook_error(3)
    assert redact("https://u:pw@example.com:8443/h?key=k#f") == "https://example.com:8443/h?..."
