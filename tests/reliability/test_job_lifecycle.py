"""A job's life under `flash run`, with real servers killed and restarted: a job is IN_QUEUE
until a worker takes it and its starts are counted then (so stopping a server twice fails only
what really ran twice), and a result that cannot be journaled fails its job, never re-run."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

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


def test_a_result_the_full_journal_cannot_hold_fails_its_job_once(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _project(tmp_path)
    flash = project / ".flash"
    flash.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(flash)], check=True
    )
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
    flash = project / ".flash"
    flash.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(flash)], check=True
    )
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
