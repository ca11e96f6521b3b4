"""The job journal and runner: nothing vanishes, across restarts too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from openflash.server.jobs import MAX_ATTEMPTS, JobJournal, JobRunner


async def echo(payload: dict[str, Any]) -> tuple[str, Any, str | None]:
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
    for _ in range(MAX_ATTEMPTS):
        journal.started(twice.id)
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
