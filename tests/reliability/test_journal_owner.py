"""The job journal has one owner: a second ``flash run`` on a project refuses (naming the first)
instead of resuming the live server's jobs, and the journal is private to its user whatever the
umask, with real ``flash run`` processes."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from local_users import SYSTEM_PYTHON, create_user, remove_user

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]

JOBS = 20


def _project(where: Path) -> Path:
    project = where / "project"
    write(
        project / "jobs.py",
        f"""
        import time
        from openflash import Endpoint

        @Endpoint(name="jobs", workers=(0, 2))
        def job(n: int) -> int:
            with open({str(where / "ran")!r}, "a") as f:
                f.write(f"{{n}}\\n")
            time.sleep(0.1)
            return n
        """,
    )
    return project


def _env(session_home: Path, uv_cache: Path) -> dict[str, str]:
    return {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "COLUMNS": "1000",  # the refusals' lines unwrapped
    }


def _wait_all(client: httpx.Client, ids: list[str]) -> dict[str, dict]:
    ended: dict[str, dict] = {}
    deadline = time.monotonic() + 120
    while len(ended) < len(ids):
        assert time.monotonic() < deadline, f"{len(ids) - len(ended)} jobs never ended"
        for job_id in ids:
            if job_id not in ended:
                body = client.get(f"/jobs/job/status/{job_id}").json()
                if body["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                    ended[job_id] = body
        time.sleep(0.1)
    return ended


def test_a_second_flash_run_on_a_served_project_refuses(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _project(tmp_path)
    env = _env(session_home, uv_cache)
    with FlashServer(project, "--no-reload", env=env) as first:
        assert first.proc is not None
        with httpx.Client(base_url=first.url, timeout=30) as client:
            ids = [
                client.post("/jobs/job/run", json={"input": {"n": n}}).json()["id"]
                for n in range(JOBS)
            ]
            second = FlashServer(project, "--no-reload", env=env)
            with pytest.raises(RuntimeError) as refused:
                second.start()
            assert second.proc is not None and second.proc.returncode == 2
            text = str(refused.value)
            assert f"pid {first.proc.pid}" in text, text
            assert f"http://127.0.0.1:{first.port}" in text, text
            assert "jobs.sqlite3" in text and "hint:" in text, text
            ended = _wait_all(client, ids)
        assert all(b["status"] == "COMPLETED" for b in ended.values()), ended
    runs = sorted(int(n) for n in (tmp_path / "ran").read_text().split())
    assert runs == list(range(JOBS)), "a job ran twice, or not at all"
    # The lock goes with its holder: after a stop, and after a SIGKILL, the next one starts.
    FlashServer(project, "--no-reload", env=env).start().kill()
    with FlashServer(project, "--no-reload", env=env) as third:
        assert httpx.get(f"{third.url}/health").status_code == 200
    report(
        "dev server",
        f"a second `flash run` on a project whose server has {JOBS} async jobs queued or running",
        "refused at once (exit 2) naming the first server's pid and address; each job ran"
        " exactly once; after the first stopped (or was SIGKILLed) the next one started",
    )


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _refused(project: Path, env: dict[str, str], says: str) -> str:
    """``flash run`` on ``project`` refused at start (exit 2), saying ``says``: its output."""
    server = FlashServer(project, "--no-reload", env=env)
    with pytest.raises(RuntimeError) as error:
        server.start()
    assert server.proc is not None and server.proc.returncode == 2, server.proc
    text = str(error.value)
    assert says in text and "hint:" in text, text
    return text


def test_the_journal_is_private_whatever_the_umask(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _project(tmp_path)
    env = _env(session_home, uv_cache)
    flash = project / ".flash"
    journal = [flash / n for n in ("jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm")]
    with _umask(0), FlashServer(project, "--no-reload", env=env) as server:
        job = httpx.post(f"{server.url}/jobs/job/run", json={"input": {"n": 1}}).json()["id"]
        with httpx.Client(base_url=server.url, timeout=30) as client:
            _wait_all(client, [job])
        assert _mode(flash) == 0o700, oct(_mode(flash))
        for path in [*journal, flash / "jobs.lock"]:
            assert _mode(path) == 0o600, f"{path.name}: {oct(_mode(path))}"
    # A journal others could have written (as earlier versions left it under umask 0) is refused,
    # the loose folder first, then each loose file, naming it and its mode; read bits are closed.
    flash.chmod(0o777)
    for path in journal:
        if path.exists():
            path.chmod(0o666)
    _refused(project, env, f"{flash} is mode 0777: writable by its group and every user")
    flash.chmod(0o700)
    _refused(project, env, f"{journal[0]} is mode 0666: writable by its group and every user")
    for path in journal:
        if path.exists():
            path.chmod(0o644)
    (flash / "jobs.lock").chmod(0o620)
    _refused(project, env, f"{flash / 'jobs.lock'} is mode 0620: writable by its group")
    (flash / "jobs.lock").chmod(0o644)
    flash.chmod(0o755)
    with _umask(0), FlashServer(project, "--no-reload", env=env):
        assert _mode(flash) == 0o700
        assert all(_mode(p) == 0o600 for p in journal if p.exists())
    # One another user owns is refused, naming it.
    os.chown(journal[0], 54321, 54321)
    _refused(project, env, "jobs.sqlite3 belongs to uid 54321")
    os.chown(journal[0], os.geteuid(), os.getegid())
    report(
        "security",
        "`flash run` under umask 0; then a journal left 0666 in a 0777 `.flash/`; then one"
        " owned by another user (uid 54321)",
        "`.flash/` 0700 and jobs.sqlite3, its -wal and -shm, and jobs.lock 0600; a loose"
        " `.flash/` or journal file (group- or world-writable) refused at start (exit 2) naming"
        " it and its mode, only read bits tightened; the foreign one refused naming its owner",
    )


_PLANT = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
route = db.execute("SELECT route FROM jobs").fetchone()[0]
db.execute(
    "INSERT INTO jobs (id, route, input, status, created) VALUES (?, ?, ?, 'IN_QUEUE', ?)",
    ("planted", route, '{"n": 666}', time.time()),
)
db.commit()
print("planted on", route)
"""


def test_a_job_planted_in_a_loose_journal_never_runs(
    session_home: Path, uv_cache: Path, report: Report
) -> None:
    # Another real local user (useradd, setpriv) writes a job into a journal left 0666 in a 0777
    # .flash/ (as earlier versions left it under umask 0), in a project folder it can reach.
    where = Path(tempfile.mkdtemp(prefix="openflash-plant-"))
    user = create_user("ofplant")
    try:
        where.chmod(0o755)
        project = _project(where)
        env = _env(session_home, uv_cache)
        with (
            FlashServer(project, "--no-reload", env=env) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            _wait_all(client, [client.post("/jobs/job/run", json={"input": {"n": 1}}).json()["id"]])
        flash = project / ".flash"
        flash.chmod(0o777)
        for name in ("jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm"):
            if (flash / name).exists():
                (flash / name).chmod(0o666)
        planted = user.run([str(SYSTEM_PYTHON), "-c", _PLANT, str(flash / "jobs.sqlite3")])
        assert planted.returncode == 0 and "planted on" in planted.stdout, planted.stderr
        # Refused at start, naming the loose folder, then (folder closed) the loose journal.
        _refused(project, env, f"{flash} is mode 0777")
        flash.chmod(0o700)
        text = _refused(project, env, "jobs.sqlite3")
        assert "is mode 0666" in text or f"belongs to uid {user.uid}" in text, text
        assert (where / "ran").read_text().split() == ["1"], "the planted job ran"
    finally:
        remove_user(user)
        shutil.rmtree(where, ignore_errors=True)
    report(
        "security",
        "another local user (useradd, setpriv) inserts a job into a journal left 0666 in a 0777"
        " `.flash/`; `flash run` restarted",
        "refused at start (exit 2) naming `.flash/` and its mode 0777, then (closed) the"
        " journal file and its mode; the planted job never ran",
    )
