"""`flash run`'s terminal log, from a real server: a line per call with its endpoint, status, job
id and worker pid; a failed call's error and hint; builds, workers starting, crashing and exiting;
a /run job's end; the same as JSON lines with --log-format json; and /metrics, parsed with
prometheus_client's parser after those calls."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import FlashServer, write


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "logged"
    write(
        root / "app.py",
        """
        import os
        from runpod_flash import Endpoint

        @Endpoint(name="log-ok", dependencies=["six==1.17.0"], workers=(0, 1))
        def ok(x: int) -> int:
            import six
            return x + 1

        @Endpoint(name="log-bad", workers=(0, 1))
        def bad(x: int) -> int:
            if x < 0:
                os._exit(3)
            raise ValueError(f"x must be even, got {x}")
        """,
    )
    return root


def _env(session_home: Path, uv_cache: Path, apt_dir: Path) -> dict[str, str]:
    return {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }


def _wait_for(server: FlashServer, text: str) -> str:
    deadline = time.monotonic() + 30
    while text not in server.output():
        assert time.monotonic() < deadline, f"no {text!r} in:\n{server.output()}"
        time.sleep(0.1)
    return server.output()


def test_text_log_lines(project: Path, session_home: Path, uv_cache: Path, apt_dir: Path) -> None:
    with FlashServer(project, "--no-reload", env=_env(session_home, uv_cache, apt_dir)) as server:
        _wait_for(server, "build done")
        r = httpx.post(f"{server.url}/app/ok/runsync", json={"input": {"x": 1}}, timeout=120)
        ok_id = r.json()["id"]
        r = httpx.post(f"{server.url}/app/bad/runsync", json={"input": {"x": 1}}, timeout=120)
        assert r.status_code == 500
        bad_id = r.json()["id"]
        job = httpx.post(f"{server.url}/app/bad/run", json={"input": {"x": 5}}, timeout=30).json()
        _wait_for(server, f"job {job['id']} on /app/bad")
        r = httpx.post(f"{server.url}/app/bad/runsync", json={"input": {"x": -1}}, timeout=120)
        assert r.json()["status"] == "FAILED"
        out = _wait_for(server, "worker crashed: log-bad")
    lines = out.splitlines()

    def index(pattern: str) -> int:
        found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"no line matches {pattern!r} in:\n{out}"
        return found[0]

    # Builds start and end before the calls; each call's worker started before its line.
    assert index(r"INFO: +build started: six==1\.17\.0") < index(r"build done in .*six==1\.17\.0")
    ok_worker = re.search(r"worker started: log-ok pid (\d+)", out)
    assert ok_worker is not None, out
    ok_line = index(r'"POST /app/ok/runsync HTTP/1.1" 200 OK  endpoint=log-ok status=COMPLETED')
    assert index("worker started: log-ok") < ok_line
    assert re.search(
        rf"\d\d:\d\d:\d\d INFO: +127\.0\.0\.1:\d+ - .* \d+\.\d+s job={ok_id} pid={ok_worker[1]}$",
        lines[ok_line],
    ), lines[ok_line]
    # A failed call: ERROR, its status, then its error's first line and its hint.
    bad_line = index(rf"ERROR: .*POST /app/bad/runsync HTTP/1.1\" 500 .*job={bad_id} pid=\d+")
    assert "endpoint=log-bad status=FAILED" in lines[bad_line]
    assert lines[bad_line + 1] == "    error: ValueError: x must be even, got 1"
    assert lines[bad_line + 2].startswith("    hint: the exception was raised by your function")
    # A /run job: its request (IN_QUEUE), then its end.
    queued = index(rf'"POST /app/bad/run HTTP/1.1" 200 OK .*status=IN_QUEUE .*job={job["id"]}')
    ended = index(rf"ERROR: +job {job['id']} on /app/bad  endpoint=log-bad status=FAILED")
    assert queued < ended
    assert lines[ended + 1] == "    error: ValueError: x must be even, got 5"
    # A worker that died: its crash, its exit code.
    assert re.search(r"ERROR: +worker crashed: log-bad pid \d+ \(exit code 3\)", out), out
    # The health probes of the test's own start are not logged.
    assert "/health" not in out


def test_json_log_and_metrics(
    project: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    env = _env(session_home, uv_cache, apt_dir)
    with FlashServer(project, "--no-reload", "--log-format", "json", env=env) as server:
        _wait_for(server, '"build_finished"')
        for x in (1, 2):
            httpx.post(f"{server.url}/app/ok/runsync", json={"input": {"x": x}}, timeout=120)
        httpx.post(f"{server.url}/app/bad/runsync", json={"input": {"x": 1}}, timeout=120)
        metrics = httpx.get(f"{server.url}/metrics", timeout=60)
        out = server.output()
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    calls = [r for r in records if r["event"] == "call"]
    assert [(c["path"], c["http_status"], c["status"]) for c in calls] == [
        ("/app/ok/runsync", 200, "COMPLETED"),
        ("/app/ok/runsync", 200, "COMPLETED"),
        ("/app/bad/runsync", 500, "FAILED"),
    ]
    assert all(c["worker_pid"] > 0 and c["job_id"] and c["endpoint"] for c in calls)
    assert calls[2]["level"] == "error"
    assert calls[2]["error"] == "ValueError: x must be even, got 1"
    assert calls[2]["hint"].startswith("the exception was raised by your function")
    kinds = [r["event"] for r in records]
    assert kinds.index("build_started") < kinds.index("build_finished") < kinds.index("call")
    assert "worker_started" in kinds
    assert any(r["event"] == "server" and "serving 2 endpoint(s)" in r["message"] for r in records)

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.text)
        for s in family.samples
    }
    assert samples[("flash_calls_total", (("endpoint", "log-ok"), ("status", "COMPLETED")))] == 2
    assert samples[("flash_calls_total", (("endpoint", "log-bad"), ("status", "FAILED")))] == 1
    assert samples[("flash_call_duration_seconds_count", (("endpoint", "log-ok"),))] == 2
    assert samples[("flash_call_queue_wait_seconds_count", (("endpoint", "log-ok"),))] == 2
    assert samples[("flash_workers", (("endpoint", "log-ok"), ("state", "ready")))] == 1
    assert samples[("flash_builds_total", (("result", "ready"),))] >= 2
    assert samples[("flash_build_duration_seconds_count", ())] >= 2
    assert samples[("flash_store_bytes", ())] > 0
