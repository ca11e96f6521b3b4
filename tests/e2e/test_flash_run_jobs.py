"""`flash run`'s async jobs as Runpod serves them: webhooks (retried, never blocking other jobs,
credentials never shown), retries with the attempt number in /status, and expiry past
FLASH_JOB_TTL. A real server, real workers, a webhook receiver on loopback."""

from __future__ import annotations

import base64
import http.server
import json
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import FlashServer

WORKER = """
import os

from runpod_flash import Endpoint
from openflash import Retries


@Endpoint(name="jobs-echo", workers=1)
def echo(value: str) -> str:
    return value


@Endpoint(name="jobs-flaky", workers=1, retries=Retries(2, initial_delay=0.3))
def flaky(path: str) -> str:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\\n")
    with open(path) as f:
        attempt = len(f.read().splitlines())
    if attempt <= 2:
        raise ValueError(f"attempt {attempt} fails")
    return f"ok at attempt {attempt}"
"""

TTL_S = 3


class Receiver:
    """A webhook receiver on loopback: its first answer waits for ``release``, then it fails
    twice (HTTP 500) and accepts the third POST."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if len(receiver.posts) == 1:
                    receiver.release.wait(60)
                self.send_response(500 if len(receiver.posts) <= 2 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, session_home: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[FlashServer]:
    project = tmp_path_factory.mktemp("jobs") / "jobs"
    project.mkdir()
    (project / "worker.py").write_text(textwrap.dedent(WORKER))
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
        "FLASH_WEBHOOK_DELAY_S": "0.2",
        "FLASH_JOB_TTL": str(TTL_S),
    }
    with FlashServer(project, "--no-reload", env=env) as running:
        yield running


def post(server: FlashServer, path: str, body: Any, code: int = 200) -> dict[str, Any]:
    r = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert r.status_code == code, r.text
    return r.json()  # type: ignore[no-any-return]


def get(server: FlashServer, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=30)


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def test_a_webhook_that_fails_twice_is_delivered_on_the_third_attempt(
    server: FlashServer,
) -> None:
    receiver = Receiver()
    try:
        hook = f"http://alice:s3cret@127.0.0.1:{receiver.port}/hook?token=t0ken"
        job = post(server, "/worker/echo/run", {"input": {"value": "hi"}, "webhook": hook})
        wait_for(lambda: receiver.posts, "the first webhook POST")
        # the first delivery is held by the receiver: other jobs go on meanwhile
        assert (
            post(server, "/worker/echo/runsync", {"input": {"value": "meanwhile"}})["output"]
            == "meanwhile"
        )
        other = post(server, "/worker/echo/run", {"input": {"value": "other"}})
        wait_for(
            lambda: (
                get(server, f"/worker/echo/status/{other['id']}").json()["status"] == "COMPLETED"
            ),
            "another job completes while a webhook is in flight",
        )
        receiver.release.set()
        wait_for(lambda: len(receiver.posts) == 3, "three webhook POSTs")
        time.sleep(0.5)
        assert len(receiver.posts) == 3  # accepted: not sent again
    finally:
        receiver.close()
    for sent in receiver.posts:  # Runpod's shape: the job's /status body
        assert sent["path"] == "/hook?token=t0ken"
        assert sent["auth"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
        body = sent["body"]
        assert body["id"] == job["id"] and body["status"] == "COMPLETED"
        assert body["output"] == "hi" and "executionTime" in body
    status = get(server, f"/worker/echo/status/{job['id']}").text
    events = get(server, "/_flash/state").text
    log = server.log.read_text()
    attempts = [line for line in log.splitlines() if f"webhook of job {job['id']}" in line]
    assert [("attempt 1 of 3" in a, "attempt 2 of 3" in a, "delivered" in a) for a in attempts] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ], attempts
    assert f"http://127.0.0.1:{receiver.port}/hook?..." in attempts[0]
    for text in (status, events, log):
        assert "s3cret" not in text and "t0ken" not in text


@pytest.mark.parametrize(
    ("hook", "problem"),
    [
        ("ftp://127.0.0.1/x", "http or https URL, not ftp"),
        ("file:///etc/passwd", "http or https URL, not file"),
        ("https:///no-host", "has no host"),
        ("http://u:p@[::1", "not a valid URL"),
    ],
)
def test_a_webhook_url_is_checked_before_the_job_starts(
    server: FlashServer, hook: str, problem: str
) -> None:
    body = post(server, "/worker/echo/run", {"input": {"value": "x"}, "webhook": hook}, code=422)
    assert problem in body["error"] and "p@" not in body["error"]


def test_a_job_is_retried_under_its_endpoint_policy_and_status_shows_the_attempt(
    server: FlashServer, tmp_path: Path
) -> None:
    attempts = tmp_path / "attempts"
    job = post(server, "/worker/flaky/run", {"input": {"path": str(attempts)}})
    seen = []

    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = get(server, f"/worker/flaky/status/{job['id']}").json()
        if body["status"] == "IN_PROGRESS" and "attempt" in body:
            seen.append(body["attempt"])
        return body if body["status"] == "COMPLETED" else None

    final = wait_for(done, "the flaky job completes")
    assert final["output"] == "ok at attempt 3" and final["attempt"] == 3
    assert seen == sorted(seen) and set(seen) <= {1, 2, 3}
    assert len(attempts.read_text().splitlines()) == 3
    rows = get(server, "/_flash/state").json()["recent"]  # the dashboard's call rows
    assert [r["attempt"] for r in rows if r["id"] == job["id"]] == [3]


def test_a_finished_job_expires_after_the_ttl(server: FlashServer) -> None:
    job = post(server, "/worker/echo/run", {"input": {"value": "soon gone"}})
    wait_for(
        lambda: get(server, f"/worker/echo/status/{job['id']}").json()["status"] == "COMPLETED",
        "the job completes",
    )
    expired = wait_for(
        lambda: (r := get(server, f"/worker/echo/status/{job['id']}")).status_code == 404 and r,
        "the job expires",
        timeout=TTL_S + 30,
    )
    body = expired.json()
    assert body["status"] == "EXPIRED" and body["id"] == job["id"]
    assert "expired" in body["error"] and "FLASH_JOB_TTL" in body["error"]
    for path in (f"/worker/echo/stream/{job['id']}",):
        assert get(server, path).json()["status"] == "EXPIRED"
    cancel = httpx.post(f"{server.url}/worker/echo/cancel/{job['id']}", timeout=30)
    assert cancel.status_code == 404 and cancel.json()["status"] == "EXPIRED"
    never = get(server, "/worker/echo/status/no-such-job")
    assert never.status_code == 404 and "no job 'no-such-job'" in never.json()["error"]
    journal = server.project / ".flash" / "jobs.sqlite3"
    import sqlite3

    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT count(*) FROM jobs WHERE id=?", (job["id"],)).fetchone() == (0,)
