"""The queue routes' POSTs answered in front of FastAPI (server/fast_path.py): the same bytes as
FastAPI's path, the same log line and metrics, and routes a reload adds served too.

One app, served through both paths: ``FastAPI.__call__`` skips the fast path, the app itself takes
it; ``app.fast.served`` says which one answered. Real workers (an environment with no packages)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from openflash.server.app import create_app
from openflash.server.fast_path import FlashApp

ECHO = """
from openflash import CpuInstanceType, Endpoint

@Endpoint(name="fast-echo", cpu=CpuInstanceType.CPU3C_1_2, workers=(0, 1))
async def echo(x: int, word: str = "hi") -> dict:
    return {"x": x, "word": word}
"""
BIG = """
from openflash import CpuInstanceType, Endpoint

@Endpoint(name="fast-big", cpu=CpuInstanceType.CPU3C_1_2, workers=(0, 1))
def big(n: int) -> str:
    return "y" * n
"""
ADDED = """
from openflash import CpuInstanceType, Endpoint

@Endpoint(name="fast-added", cpu=CpuInstanceType.CPU3C_1_2, workers=(0, 1))
def added(a: int) -> int:
    return a + 1
"""
KEY = {"Authorization": "Bearer s3cret"}


class Both:
    """An ASGI app that serves through the fast path, or with ``fastapi`` set, FastAPI's alone."""

    def __init__(self, app: FlashApp) -> None:
        self.app, self.fastapi = app, False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.fastapi and scope["type"] == "http":
            await FastAPI.__call__(self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)


@pytest.fixture
def served(
    flash_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Both, TestClient]]:
    monkeypatch.setenv("FLASH_MAX_RESULT_BYTES", "1K")
    (tmp_path / "echo.py").write_text(ECHO)
    (tmp_path / "big.py").write_text(BIG)
    app = create_app(
        tmp_path,
        api_key="s3cret",
        max_body=4096,
        log_format="json",
        allowed_hosts=frozenset({"testserver"}),
    )
    assert isinstance(app, FlashApp)
    both = Both(app)
    with TestClient(both, raise_server_exceptions=False) as client:
        yield both, client


def _both(
    both: Both, client: TestClient, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response, int]:
    """The answer of FastAPI's path, the fast path's, and how many the fast path served."""
    assert both.app.fast is not None
    served = both.app.fast.served
    both.fastapi = True
    slow = client.request(method, path, **kwargs)
    both.fastapi = False
    fast = client.request(method, path, **kwargs)
    return slow, fast, both.app.fast.served - served


def _same(slow: httpx.Response, fast: httpx.Response, ids: bool = False) -> None:
    slow_body, fast_body = slow.content, fast.content
    if ids:  # a call's id is new each call: compared as a placeholder
        slow_body = slow_body.replace(slow.json()["id"].encode(), b"ID")
        fast_body = fast_body.replace(fast.json()["id"].encode(), b"ID")
    assert (fast.status_code, fast.headers.raw, fast_body) == (
        slow.status_code,
        slow.headers.raw,
        slow_body,
    )


def test_the_fast_path_answers_byte_for_byte_as_fastapi_does(
    served: tuple[Both, TestClient],
) -> None:
    both, client = served
    good = {"json": {"input": {"x": 7}}, "headers": KEY}
    slow, fast, n = _both(both, client, "POST", "/echo/runsync", **good)
    assert n == 1 and fast.status_code == 200
    assert fast.json()["output"] == {"x": 7, "word": "hi"}
    _same(slow, fast, ids=True)

    refused: list[tuple[str, str, dict[str, Any], int, int]] = [
        # a wrong type, a missing field, no body, text that is not JSON: 422 with FastAPI's detail
        ("POST", "/echo/runsync", {"json": {"input": {"x": "seven"}}}, 422, 1),
        ("POST", "/echo/runsync", {"json": {"input": {}}}, 422, 1),
        ("POST", "/echo/runsync", {}, 422, 1),
        ("POST", "/echo/runsync", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 422, 1),
        # nested too deep (400), too large (413), not JSON (415): the security checks' answers
        ("POST", "/echo/runsync", {"content": b"[" * 300 + b"]" * 300, "headers": {"content-type": "application/json"}}, 400, 1),
        ("POST", "/echo/runsync", {"json": {"input": {"x": 1, "word": "w" * 5000}}}, 413, 1),
        ("POST", "/echo/runsync", {"content": b"x=1", "headers": {"content-type": "text/plain"}}, 415, 1),
        # FastAPI's own: an unknown endpoint (404), a wrong method (405)
        ("POST", "/nothing/runsync", {"json": {"input": {"x": 1}}}, 404, 0),
        ("GET", "/echo/runsync", {}, 405, 0),
        ("PUT", "/echo/run", {"json": {"input": {"x": 1}}}, 405, 0),
        # a result over FLASH_MAX_RESULT_BYTES: 507, the call FAILED
        ("POST", "/big/runsync", {"json": {"input": {"n": 5000}}}, 507, 1),
    ]  # fmt: skip
    for method, path, kwargs, status, fast_served in refused:
        headers = {**KEY, **kwargs.pop("headers", {})}
        slow, fast, n = _both(both, client, method, path, headers=headers, **kwargs)
        assert (fast.status_code, n) == (status, fast_served), (path, kwargs, fast.text)
        _same(slow, fast, ids=status == 507)
    assert "FLASH_MAX_RESULT_BYTES=1024" in fast.json()["error"]


def test_keys_and_hosts_are_checked_on_the_fast_path(served: tuple[Both, TestClient]) -> None:
    both, client = served
    body = {"input": {"x": 1}}
    for headers, status in (
        ({}, 401),  # no key
        ({"Authorization": "Bearer wrong"}, 401),
        ({**KEY, "Host": "evil.example"}, 400),  # DNS rebinding: a Host not allowed
    ):
        slow, fast, n = _both(both, client, "POST", "/echo/runsync", json=body, headers=headers)
        assert (fast.status_code, n) == (status, 1), fast.text
        _same(slow, fast)
    assert fast.json()["error"].startswith("Host 'evil.example' is not one this server answers")


def test_a_run_job_then_its_status(served: tuple[Both, TestClient]) -> None:
    both, client = served
    assert both.app.fast is not None
    before = both.app.fast.served
    job = client.post("/echo/run", json={"input": {"x": 3, "word": "job"}}, headers=KEY)
    assert job.status_code == 200 and job.json()["status"] == "IN_QUEUE"
    assert both.app.fast.served == before + 1
    deadline = time.monotonic() + 120
    while True:
        status = client.get(f"/echo/status/{job.json()['id']}", headers=KEY).json()
        if status["status"] not in ("IN_QUEUE", "IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status["status"] == "COMPLETED" and status["output"] == {"x": 3, "word": "job"}
    # /status of a job that ended, of a runsync call kept a while, of an unknown id: the same
    ran = client.post("/echo/runsync", json={"input": {"x": 4}}, headers=KEY).json()["id"]
    for job_id, code in ((job.json()["id"], 200), (ran, 200), ("no-such-job", 404)):
        slow, fast, n = _both(both, client, "GET", f"/echo/status/{job_id}", headers=KEY)
        assert (fast.status_code, n) == (code, 1), fast.text
        _same(slow, fast)
    slow, fast, n = _both(both, client, "GET", "/echo/status/", headers=KEY)
    assert (fast.status_code, n) == (404, 0)  # no id: FastAPI's
    _same(slow, fast)
    # a webhook that is no URL: the route's own 422, the same on both paths
    slow, fast, n = _both(
        both, client, "POST", "/echo/run", json={"input": {"x": 1}, "webhook": "nope"}, headers=KEY
    )
    assert (fast.status_code, n) == (422, 1)
    _same(slow, fast)


def test_fast_path_calls_are_logged_and_counted(
    served: tuple[Both, TestClient], capsys: pytest.CaptureFixture[str]
) -> None:
    both, client = served
    capsys.readouterr()
    good = client.post("/echo/runsync", json={"input": {"x": 5}}, headers=KEY)
    refused = client.post("/echo/runsync", json={"input": {"x": "five"}}, headers=KEY)
    assert both.app.fast is not None and both.app.fast.served == 2
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    calls = [line for line in lines if line["event"] == "call"]
    assert [(c["path"], c["http_status"]) for c in calls] == [
        ("/echo/runsync", 200),
        ("/echo/runsync", 422),
    ]
    assert calls[0]["endpoint"] == "fast-echo" and calls[0]["status"] == "COMPLETED"
    assert calls[0]["job_id"] == good.json()["id"] and calls[0]["worker_pid"]
    assert calls[1]["error"] == refused.json()["error"]
    metrics = client.get("/metrics", headers=KEY).text
    counted = re.search(
        r'flash_calls_total\{endpoint="fast-echo",status="COMPLETED"\} (\S+)', metrics
    )
    assert counted is not None and float(counted.group(1)) == 1.0
    recent = client.get("/_flash/state", headers=KEY).json()
    assert good.json()["id"] in json.dumps(recent)  # the dashboard's record of the call


def test_the_dashboard_shows_a_fast_path_call_as_a_fastapi_one(
    served: tuple[Both, TestClient],
) -> None:
    """The same fields in the recent list and the call's detail (its input made when the page
    asks: call_records.Later), whichever path answered."""
    both, client = served
    body = {"json": {"input": {"x": 6, "word": "dash"}}, "headers": KEY}
    slow, fast, n = _both(both, client, "POST", "/echo/runsync", **body)
    assert n == 1 and fast.status_code == slow.status_code == 200
    recent = client.get("/_flash/state", headers=KEY).json()["recent"]
    rows = {row["id"]: row for row in recent}
    details = [
        client.get(f"/_flash/calls/{r.json()['id']}", headers=KEY).json() for r in (slow, fast)
    ]
    for answer, detail in zip((slow, fast), details, strict=True):
        assert detail["input"]["json"] == json.dumps({"x": 6, "word": "dash"}, indent=2)
        assert json.loads(detail["output"]["json"]) == {"x": 6, "word": "dash"}
        assert (detail["kind"], detail["status"], detail["endpoint"]) == (
            "runsync",
            "COMPLETED",
            "fast-echo",
        )
        assert detail["worker"]["pid"] and detail["timings"]["seconds"] is not None
        assert detail["timings"]["queue_wait"] is not None
        assert rows[answer.json()["id"]]["status"] == "COMPLETED"

    def shape(detail: dict[str, Any]) -> dict[str, Any]:
        varying = ("id", "timings", "worker", "worker_output")
        return {k: v for k, v in detail.items() if k not in varying}

    assert shape(details[0]) == shape(details[1])
    slow_row, fast_row = rows[slow.json()["id"]], rows[fast.json()["id"]]
    assert sorted(slow_row) == sorted(fast_row)


def test_routes_a_reload_adds_are_served_on_the_fast_path(
    served: tuple[Both, TestClient], tmp_path: Path
) -> None:
    both, client = served
    assert both.app.fast is not None
    assert client.post("/added/runsync", json={"input": {"a": 1}}, headers=KEY).status_code == 404
    (tmp_path / "added.py").write_text(ADDED)
    assert client.portal is not None
    client.portal.call(both.app.state.flash.reload, both.app)  # on the loop, as reload.py does
    before = both.app.fast.served
    answer = client.post("/added/runsync", json={"input": {"a": 41}}, headers=KEY)
    assert answer.status_code == 200 and answer.json()["output"] == 42
    assert both.app.fast.served == before + 1
    (tmp_path / "added.py").unlink()
    client.portal.call(both.app.state.flash.reload, both.app)
    gone = client.post("/added/runsync", json={"input": {"a": 1}}, headers=KEY)
    assert gone.status_code == 404 and both.app.fast.served == before + 1


def test_paths_an_earlier_route_matches_are_left_to_fastapi(
    flash_home: Path, tmp_path: Path
) -> None:
    """Load-balanced routes are added before the queue routes, so one at a queue route's path
    (here /v2/fast-echo/..., the queue endpoint's alias) is the one Starlette matches: the
    fast path must not answer those paths, and still answers the others."""
    (tmp_path / "echo.py").write_text(ECHO)
    (tmp_path / "v2.py").write_text(
        """
from openflash import CpuInstanceType, Endpoint

api = Endpoint(name="fast-mine", cpu=CpuInstanceType.CPU3C_1_2, workers=(0, 1))

@api.get("/fast-echo/status/{what}", local=True)
async def mine(what: str) -> dict:
    return {"mine": what}

@api.post("/fast-echo/runsync", local=True)
async def mine_too(x: int) -> dict:
    return {"mine too": x}
"""
    )
    app = create_app(tmp_path, quiet=True)
    assert isinstance(app, FlashApp) and app.fast is not None
    assert app.fast.lookup("POST", "/v2/fast-echo/runsync") is None
    assert app.fast.lookup("GET", "/v2/fast-echo/status/abc") is None
    assert app.fast.lookup("POST", "/echo/runsync") is not None  # the others are still served
    assert app.fast.lookup("GET", "/echo/status/abc") is not None
    with TestClient(app) as client:
        assert client.get("/v2/fast-echo/status/abc").json() == {"mine": "abc"}
        answer = client.post("/v2/fast-echo/runsync", json={"x": 2})
        assert answer.json() == {"mine too": 2}
    assert app.fast.served == 0


def test_a_calls_id_has_uuid4s_form() -> None:
    """routes.py makes /runsync ids from random bits without a ``UUID`` object: each is what
    ``uuid.uuid4().hex`` gives (version 4, the RFC 4122 variant, 32 hex digits), all distinct."""
    import uuid

    from openflash.server.routes import _new_id

    ids = [_new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for made in ids:
        as_uuid = uuid.UUID(made)
        assert (as_uuid.hex, as_uuid.version, as_uuid.variant) == (made, 4, uuid.RFC_4122)
    # every bit that is not version or variant varies (none stuck at 0 or 1)
    ored = anded = int(ids[0], 16)
    for made in ids[1:]:
        ored, anded = ored | int(made, 16), anded & int(made, 16)
    fixed = (0xC000 << 48) | (0xF000 << 64)
    assert ored | fixed == (1 << 128) - 1 and anded & ~fixed == 0


def test_a_500_is_logged_with_its_error_on_both_paths(
    flash_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception no handler expected (here: a job's large result file replaced by a symbolic
    link, which /status refuses to open: O_NOFOLLOW) is answered with a 500 on either path, and
    its log line names the error the 500's body gives, the same on both."""
    (tmp_path / "big.py").write_text(BIG)
    app = create_app(tmp_path, log_format="json")
    assert isinstance(app, FlashApp)
    both = Both(app)
    with TestClient(both, raise_server_exceptions=False) as client:
        job = client.post("/big/run", json={"input": {"n": 100_000}}).json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/big/status/{job}").json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline, "the job did not complete"
            time.sleep(0.05)
        stored = app.state.flash.journal.get(job, load=False).output
        moved = stored.path.with_name("elsewhere.json")  # a large result's file of its own
        stored.path.rename(moved)
        stored.path.symlink_to(moved)
        capsys.readouterr()
        slow, fast, n = _both(both, client, "GET", f"/big/status/{job}")
    assert (slow.status_code, fast.status_code, n) == (500, 500, 1)
    _same(slow, fast)
    error = fast.json()["error"]
    assert error.startswith("OSError: [Errno 40] Too many levels of symbolic links")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    calls = [line for line in lines if line["event"] == "call"]
    assert [(c["path"], c["http_status"], c["level"]) for c in calls] == [
        (f"/big/status/{job}", 500, "error"),
        (f"/big/status/{job}", 500, "error"),
    ]
    assert calls[0]["error"] == calls[1]["error"] == error  # FastAPI's path, then the fast one
