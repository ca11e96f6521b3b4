"""A job's life under `flash run`, with real servers killed and restarted: a job is IN_QUEUE
until a worker takes it and its starts are counted then (so stopping a server twice fails only
what really ran twice), and a result that cannot be journaled fails its job, never re-run."""

from __future__ import annotations

import errno
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]

JOBS = 10
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def _project(where: Path) -> Path:
    project = where / "project"
    write(
        project / "jobs.py",
        f"""
        import os
        import time
        from openflash import Endpoint

        @Endpoint(name="jobs", workers=(0, 1))
        def job(n: int, size: int = 0) -> str:
            with open({str(where / "ran")!r}, "a") as f:
                f.write(f"{{n}}\\n")
            while os.path.exists({str(where / "hold")!r}):  # until the test lets it end
                time.sleep(0.05)
            return "x" * size
        """,
    )
    return project


def _env(session_home: Path, uv_cache: Path) -> dict[str, str]:
    return {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}


def _statuses(client: httpx.Client, ids: list[str]) -> list[dict]:
    return [client.get(f"/jobs/job/status/{job_id}").json() for job_id in ids]


def _until(check: Callable[[], object], what: str, timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)
    return found


def _one_taken(server: FlashServer, ids: list[str]) -> list[dict]:
    """Once a worker has taken a job: every status, checked that the others are still queued."""
    with httpx.Client(base_url=server.url, timeout=30) as client:

        def taken() -> list[dict] | None:
            statuses = _statuses(client, ids)
            running = [s for s in statuses if s["status"] == "IN_PROGRESS"]
            return statuses if running else None

        statuses = _until(taken, "a job IN_PROGRESS")
    assert isinstance(statuses, list)
    counts = Counter(s["status"] for s in statuses)
    # One worker, hold on: one job runs, and every other is queued (not "in progress").
    assert counts["IN_PROGRESS"] == 1 and counts["IN_QUEUE"] == len(ids) - 1, counts
    return statuses


def test_stopping_a_server_twice_fails_only_jobs_that_ran_twice(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _project(tmp_path)
    env = _env(session_home, uv_cache)
    hold = tmp_path / "hold"
    hold.touch()
    first = FlashServer(project, "--no-reload", env=env).start()
    ids = [
        httpx.post(f"{first.url}/jobs/job/run", json={"input": {"n": n}}).json()["id"]
        for n in range(JOBS)
    ]
    _one_taken(first, ids)
    first.kill()
    second = FlashServer(project, "--no-reload", port=first.port, env=env).start()
    _one_taken(second, ids)
    second.kill()
    hold.unlink()
    with (
        FlashServer(project, "--no-reload", port=first.port, env=env) as third,
        httpx.Client(base_url=third.url, timeout=30) as client,
    ):

        def ended() -> list[dict] | None:
            statuses = _statuses(client, ids)
            return statuses if all(s["status"] in ENDED for s in statuses) else None

        statuses = _until(ended, "every job ended")
    assert isinstance(statuses, list)
    runs = Counter(int(n) for n in (tmp_path / "ran").read_text().split())
    failed = [n for n, s in enumerate(statuses) if s["status"] != "COMPLETED"]
    twice = [n for n in range(JOBS) if runs[n] >= 2]
    assert failed == [n for n in twice if runs[n] == 2], (failed, runs, statuses)
    assert len(failed) <= 1, statuses
    for n in failed:
        assert "stopped while this job was running, 2 times" in statuses[n]["error"]
    for n in range(JOBS):
        if n not in failed:
            assert statuses[n]["status"] == "COMPLETED", statuses[n]
    report(
        "dev server",
        f"SIGKILL to `flash run` twice, each time with one of {JOBS} async jobs running on its"
        " single worker and the rest queued, then a restart",
        f"queued jobs showed IN_QUEUE, not IN_PROGRESS; afterwards {JOBS - len(failed)} completed"
        f' and {len(failed)} (started by both killed servers) failed "stopped 2 times";'
        " no job that never started was failed",
    )


def _small_journal_disk(project: Path) -> Path:
    """``project``'s ``.flash/`` as a 512 KiB tmpfs of its own (unmounted by the caller)."""
    flash = project / ".flash"
    flash.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(flash)], check=True
    )
    return flash


def test_a_result_the_full_journal_cannot_hold_fails_its_job_once(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _project(tmp_path)
    flash = _small_journal_disk(project)
    env = _env(session_home, uv_cache)
    server = FlashServer(project, "--no-reload", env=env)
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            big = client.post("/jobs/job/run", json={"input": {"n": 1, "size": 2 << 20}})
            job = big.json()["id"]

            def ended() -> dict | None:
                body = client.get(f"/jobs/job/status/{job}").json()
                return body if body["status"] in ENDED else None

            body = _until(ended, "the job with a 2 MiB result ended", timeout=60)
            assert isinstance(body, dict)
            assert body["status"] == "FAILED", body
            assert "could not be journaled" in body["error"], body
            assert "full" in body["error"] and "not run again" in body["error"], body
        server.kill()
        with (
            FlashServer(project, "--no-reload", env=env) as again,
            httpx.Client(base_url=again.url, timeout=30) as client,
        ):
            assert client.get(f"/jobs/job/status/{job}").json()["status"] == "FAILED"
            small = client.post("/jobs/job/runsync", json={"input": {"n": 2, "size": 3}})
            assert small.json()["output"] == "xxx", small.text
    finally:
        server.stop()
        subprocess.run(["umount", str(flash)], check=True)
    runs = Counter(int(n) for n in (tmp_path / "ran").read_text().split())
    assert runs == {1: 1, 2: 1}, runs
    report(
        "dev server",
        "a job whose 2 MiB result cannot be journaled (`.flash/` a 512 KiB tmpfs), then a"
        " SIGKILL to the server and a restart",
        "the job FAILED with the reason (the journal's disk is full) and was never run again;"
        " the restarted server ran the next job normally",
    )


def _submit(server: FlashServer, count: int) -> list[str]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return [
            client.post("/jobs/job/run", json={"input": {"n": n}}).json()["id"]
            for n in range(count)
        ]


def _all_ended(server: FlashServer, ids: list[str]) -> list[dict]:
    with httpx.Client(base_url=server.url, timeout=30) as client:

        def ended() -> list[dict] | None:
            statuses = _statuses(client, ids)
            return statuses if all(s["status"] in ENDED for s in statuses) else None

        statuses = _until(ended, "every job ended", timeout=300)
    assert isinstance(statuses, list)
    return statuses


def _runs(where: Path) -> Counter[int]:
    ran = where / "ran"
    return Counter(int(n) for n in ran.read_text().split()) if ran.exists() else Counter()


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(("# a harmless change\n", ""), id="a-comment"),
        pytest.param(("", "idle_timeout=61"), id="a-config-change"),  # replaces the pool
    ],
)
def test_a_reload_hands_queued_jobs_to_the_next_pool(
    edit: tuple[str, str], tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    prefix, keyword = edit
    project = _project(tmp_path)
    hold = tmp_path / "hold"
    hold.touch()
    with FlashServer(project, env=_env(session_home, uv_cache)) as server:  # --reload: the default
        ids = _submit(server, JOBS)
        running = _one_taken(server, ids)
        first = next(n for n, s in enumerate(running) if s["status"] == "IN_PROGRESS")
        source = project / "jobs.py"
        text = prefix + source.read_text()
        if keyword:
            text = text.replace("workers=(0, 1)", f"workers=(0, 1), {keyword}")
        source.write_text(text)
        _until(lambda: "reloaded:" in server.output(), "the server reloaded")
        if keyword:
            _until(lambda: "replaced the workers of jobs" in server.output(), "a new pool")
        hold.unlink()
        statuses = _all_ended(server, ids)
    log = server.output()
    assert [s["status"] for s in statuses] == ["COMPLETED"] * JOBS, (statuses, log)
    assert _runs(tmp_path) == Counter(range(JOBS)), _runs(tmp_path)  # each ran exactly once
    pids = {
        job_id: re.search(rf"job {job_id} on .* pid=(\d+)", log)[1]  # type: ignore[index]
        for job_id in ids
    }
    others = {pids[job_id] for n, job_id in enumerate(ids) if n != first}
    if keyword:  # the running job finished on its old worker; the queued ones went to the new
        assert pids[ids[first]] not in others and len(others) == 1, (pids, log)
    else:  # the pool was kept: its worker ran them all
        assert others == {pids[ids[first]]}, (pids, log)
    what = "a comment added" if not keyword else f"`{keyword}` added, which replaces its pool"
    report(
        "dev server",
        f"an edit of an endpoint's file ({what}) under `--reload` with {JOBS} async jobs on its"
        " single worker, one running and the rest queued",
        f"all {JOBS} completed, each run exactly once (a side-effect file per run); the running"
        " one finished on its worker"
        + ("; the queued ones were handed to the new pool, never failed" if keyword else ""),
    )


def _signal(server: FlashServer, *signals: signal.Signals) -> None:
    """Send ``signals`` to the server's process group, as a terminal's Ctrl-C does; wait for
    it to exit."""
    assert server.proc is not None
    for sig in signals:
        os.killpg(server.proc.pid, sig)
        time.sleep(0.2)
    server.proc.wait(120)


def _journal(project: Path, ids: list[str]) -> list[tuple[str, int]]:
    """(status, attempts) of each job, read from the journal the stopped server left."""
    db = sqlite3.connect(f"file:{project / '.flash' / 'jobs.sqlite3'}?mode=ro", uri=True)
    try:
        rows = dict(
            (row[0], (row[1], row[2]))
            for row in db.execute("SELECT id, status, attempts FROM jobs")
        )
    finally:
        db.close()
    return [rows[job_id] for job_id in ids]


def _left_for_the_next(project: Path, ids: list[str], ran: Counter[int]) -> None:
    """Every job the stop interrupted is IN_QUEUE, with its attempts the starts it really had."""
    journal = _journal(project, ids)
    assert [status for status, _ in journal] == ["IN_QUEUE"] * len(ids), journal
    assert [attempts for _, attempts in journal] == [ran[n] for n in range(len(ids))], (
        journal,
        ran,
    )


def test_ctrl_c_twice_leaves_queued_jobs_queued_for_the_next_server(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    jobs = 30
    project = _project(tmp_path)
    env = _env(session_home, uv_cache)
    hold = tmp_path / "hold"
    hold.touch()
    first = FlashServer(project, env=env).start()
    ids = _submit(first, jobs)
    _one_taken(first, ids)
    _signal(first, signal.SIGINT)  # Ctrl-C
    _left_for_the_next(project, ids, _runs(tmp_path))
    second = FlashServer(project, port=first.port, env=env).start()
    _one_taken(second, ids)
    _signal(second, signal.SIGINT, signal.SIGINT)  # an impatient Ctrl-C, pressed twice
    before = _runs(tmp_path)
    _left_for_the_next(project, ids, before)
    hold.unlink()
    with FlashServer(project, port=first.port, env=env) as third:
        statuses = _all_ended(third, ids)
        runs = _runs(tmp_path)
        failed = [n for n, s in enumerate(statuses) if s["status"] != "COMPLETED"]
        assert failed == [n for n in range(jobs) if before[n] == 2], (failed, before, statuses)
        for n in failed:
            assert "stopped while this job was running, 2 times" in statuses[n]["error"]
            assert runs[n] == 2, runs
            retried = httpx.post(f"{third.url}/jobs/job/retry/{ids[n]}", timeout=30)
            assert retried.json() == {"id": ids[n], "status": "IN_QUEUE"}, retried.text
        retries = _all_ended(third, [ids[n] for n in failed])  # a new run: its own attempts
    assert [s["status"] for s in retries] == ["COMPLETED"] * len(failed), retries
    assert all(_runs(tmp_path)[n] == 3 for n in failed), _runs(tmp_path)
    for n in set(range(jobs)) - set(failed):
        assert statuses[n]["status"] == "COMPLETED" and runs[n] == before[n] + 1 <= 2, (
            n,
            statuses[n],
            runs,
        )
    assert sum(1 for n in range(jobs) if before[n] == 0) >= jobs - 2, before
    report(
        "dev server",
        f"Ctrl-C (SIGINT to its process group) to `flash run` with {jobs} async jobs queued on a"
        " single worker, one running; a restart; Ctrl-C pressed twice; a restart",
        f"after each stop the journal held every job IN_QUEUE, attempts counted only for starts"
        f" that happened; afterwards {jobs - len(failed)} completed, each run once more than"
        f' before; {len(failed)} (running at both stops) failed "stopped 2 times", and'
        " completed when retried (`/retry` starts its count of starts afresh); none that never"
        " ran failed",
    )


def test_a_sigterm_stop_and_restart_runs_every_job(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _project(tmp_path)
    env = _env(session_home, uv_cache)
    hold = tmp_path / "hold"
    hold.touch()
    first = FlashServer(project, "--no-reload", env=env).start()
    ids = _submit(first, JOBS)
    running = _one_taken(first, ids)
    interrupted = next(n for n, s in enumerate(running) if s["status"] == "IN_PROGRESS")
    first.stop()  # SIGTERM to its process group
    _left_for_the_next(project, ids, _runs(tmp_path))
    hold.unlink()
    with FlashServer(project, "--no-reload", port=first.port, env=env) as second:
        statuses = _all_ended(second, ids)
    assert [s["status"] for s in statuses] == ["COMPLETED"] * JOBS, statuses
    expected = Counter(range(JOBS))
    expected[interrupted] += 1  # the documented rule: a job running at a stop runs again
    assert _runs(tmp_path) == expected, _runs(tmp_path)
    report(
        "dev server",
        f"SIGTERM to `flash run` with {JOBS} async jobs on a single worker (one running, the rest"
        " queued), then a restart",
        f"the journal kept the {JOBS - 1} queued jobs IN_QUEUE with no attempt counted; the next"
        " server ran every job; the interrupted one ran again once (as documented), the rest once",
    )


def _fill(folder: Path) -> Path:
    """Fill ``folder``'s filesystem to its last block; the file that does it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return filler


def test_a_job_whose_failure_cannot_be_journaled_is_held_and_never_run_again(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _project(tmp_path)
    flash = _small_journal_disk(project)
    env = _env(session_home, uv_cache)
    hold = tmp_path / "hold"
    hold.touch()
    server = FlashServer(project, "--no-reload", env=env)
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            job = client.post("/jobs/job/run", json={"input": {"n": 1, "size": 10}}).json()["id"]
            _one_taken(server, [job])
            filler = _fill(flash)  # nothing more fits: not the result, nor the job's failure
            hold.unlink()

            def ended() -> dict | None:
                body = client.get(f"/jobs/job/status/{job}").json()
                return body if body["status"] in ENDED else None

            body = _until(ended, "the job ended", timeout=60)
            assert isinstance(body, dict)
            assert body["status"] == "FAILED", body  # answered from memory
            assert "could not be journaled" in body["error"], body
            said = server.log.read_text()
            assert "its failure could not be journaled either" in said, said[-3000:]
            assert "held in memory" in said
            filler.unlink()  # room again: the held failure is written
            _until(
                lambda: "its failure is journaled now" in server.log.read_text(),
                "the held failure written",
                timeout=60,
            )
        server.kill()
        with (
            FlashServer(project, "--no-reload", env=env) as again,
            httpx.Client(base_url=again.url, timeout=30) as client,
        ):
            after = client.get(f"/jobs/job/status/{job}").json()
            assert after["status"] == "FAILED" and "could not be journaled" in after["error"]
            small = client.post("/jobs/job/runsync", json={"input": {"n": 2, "size": 3}})
            assert small.json()["output"] == "xxx", small.text
    finally:
        hold.unlink(missing_ok=True)
        server.stop()
        subprocess.run(["umount", str(flash)], check=True)
    runs = Counter(int(n) for n in (tmp_path / "ran").read_text().split())
    assert runs == {1: 1, 2: 1}, runs
    report(
        "dev server",
        "a job ending while its journal's disk (`.flash/`, a 512 KiB tmpfs) was full to the "
        "last block, so that neither its result nor its failure could be written; then room "
        "made, a SIGKILL to the server and a restart",
        "its status answered FAILED with the reason from memory and the server said it was "
        "held; once there was room the failure was journaled; after the restart it was FAILED "
        "and never ran again",
    )
