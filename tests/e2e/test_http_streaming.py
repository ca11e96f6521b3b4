"""Streaming and progress over HTTP: a real `flash run`, real workers, real HTTP with httpx.

Incremental delivery is proved with files: the worker's generator waits for a gate file that the
test creates only once it has received the first item over HTTP.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import FlashServer
from webdriver import dashboard_dom

PROJECT = """
import os
import time

from openflash import CpuLiveServerless, Endpoint, progress, remote


@remote(CpuLiveServerless(name="http-stream"))
def tokens(gate: str, n: int = 5):
    yield "t0"
    while not os.path.exists(gate):
        time.sleep(0.01)
    for i in range(1, n):
        time.sleep(0.2)
        yield f"t{i}"


@remote(CpuLiveServerless(name="http-stream"))
def endless(trace: str):
    try:
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.05)
    finally:
        with open(trace, "w") as f:
            f.write("closed")


@remote(CpuLiveServerless(name="http-stream"))
async def fails_midway():
    yield 1
    yield 2
    raise ValueError("the third token is bad")


@remote(CpuLiveServerless(name="http-progress"))
def runpod_style(job: dict) -> str:
    import runpod  # the worker runtime's shim (runpod is not a dependency here)

    runpod.serverless.progress_update(job, "3/10 images")
    while not os.path.exists(job["input"]["gate"]):
        time.sleep(0.01)
    return "done"


@remote(CpuLiveServerless(name="http-progress"))
def slow_job(gate: str) -> str:
    progress({"step": 1, "of": 2})
    while not os.path.exists(gate):
        time.sleep(0.01)
    return "done"


api = Endpoint(name="http-stream-routes")


@api.get("/words")
def words(gate: str, n: int = 3):
    progress("started")
    yield "w0"
    while not os.path.exists(gate):
        time.sleep(0.01)
    for i in range(1, n):
        yield f"w{i}"


@api.post("/words/broken")
async def broken_words(at_once: bool):
    if at_once:
        raise ValueError("no words at all")
    yield "w0"
    raise RuntimeError("the second word is bad")


@api.get("/words/endless")
def endless_words(trace: str):
    try:
        while True:
            yield "again"
            time.sleep(0.05)
    finally:
        with open(trace, "w") as f:
            f.write("closed")
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, session_home: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[FlashServer]:
    project = tmp_path_factory.mktemp("http-streaming") / "app"
    project.mkdir()
    (project / "gen.py").write_text(PROJECT)
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    with FlashServer(project, "--no-reload", env=env) as running:
        yield running


def post(server: FlashServer, path: str, body: Any = None) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def get(server: FlashServer, path: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}{path}", timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def until(check: Any, limit: float = 60.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("the condition never held")


def test_runsync_of_a_generator_returns_the_aggregated_list(
    server: FlashServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    r = post(server, "/gen/tokens/runsync", {"input": {"gate": str(gate), "n": 3}})
    assert r.status_code == 200, r.text
    assert r.json()["output"] == ["t0", "t1", "t2"]


def test_stream_returns_the_items_since_the_last_poll(server: FlashServer, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = post(server, "/gen/tokens/run", {"input": {"gate": str(gate), "n": 5}}).json()
    first = until(lambda: get(server, f"/gen/tokens/stream/{job['id']}")["stream"])
    assert first == [{"output": "t0"}]  # before the worker could make the second item
    gate.touch()
    items = [x["output"] for x in first]
    while True:
        body = get(server, f"/gen/tokens/stream/{job['id']}")
        items += [x["output"] for x in body["stream"]]
        if body["status"] == "COMPLETED":
            break
        assert body["status"] == "IN_PROGRESS", body
        time.sleep(0.05)
    assert items == ["t0", "t1", "t2", "t3", "t4"]  # each once, in order
    assert body["output"] == items  # the aggregate, as return_aggregate_stream gives it
    assert get(server, f"/gen/tokens/status/{job['id']}")["output"] == items


def test_server_sent_events_stream_items_as_they_come(server: FlashServer, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = post(server, "/gen/tokens/run", {"input": {"gate": str(gate), "n": 4}}).json()
    events: list[tuple[str, Any]] = []
    url = f"{server.url}/gen/tokens/stream/{job['id']}/events"
    with httpx.stream("GET", url, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[len("data: ") :])))
                if events == [("item", "t0")]:
                    gate.touch()  # only now may the worker make the rest
                if kind == "end":
                    break
    assert events == [
        ("item", "t0"),
        ("item", "t1"),
        ("item", "t2"),
        ("item", "t3"),
        ("end", {"status": "COMPLETED"}),
    ]


def test_cancelling_a_stream_job_stops_the_generator(server: FlashServer, tmp_path: Path) -> None:
    trace = tmp_path / "closed"
    job = post(server, "/gen/endless/run", {"input": {"trace": str(trace)}}).json()
    until(lambda: get(server, f"/gen/endless/stream/{job['id']}")["stream"])
    assert post(server, f"/gen/endless/cancel/{job['id']}").json()["status"] == "CANCELLED"
    until(trace.exists)  # the generator's finally ran in the worker


def test_an_error_mid_stream_keeps_the_items_before_it(server: FlashServer) -> None:
    job = post(server, "/gen/fails_midway/run", {"input": {}}).json()
    items: list[Any] = []

    def ended() -> dict[str, Any] | None:
        body = get(server, f"/gen/fails_midway/stream/{job['id']}")
        items.extend(x["output"] for x in body["stream"])
        return body if body["status"] not in ("IN_QUEUE", "IN_PROGRESS") else None

    body = until(ended)
    assert body["status"] == "FAILED" and "the third token is bad" in body["error"]
    assert items == [1, 2]


def test_progress_shows_in_status_while_the_job_runs(server: FlashServer, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = post(server, "/gen/slow_job/run", {"input": {"gate": str(gate)}}).json()
    running = until(
        lambda: (b := get(server, f"/gen/slow_job/status/{job['id']}")).get("progress") and b
    )
    assert running["status"] == "IN_PROGRESS"
    assert running["progress"] == {"step": 1, "of": 2} == running["output"]  # Runpod's place
    gate.touch()
    done = until(
        lambda: (
            (b := get(server, f"/gen/slow_job/status/{job['id']}"))["status"] == "COMPLETED" and b
        )
    )
    assert done["output"] == "done" and done["progress"] == {"step": 1, "of": 2}


def test_the_dashboard_shows_a_running_jobs_progress_in_chromium(
    server: FlashServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job = post(server, "/gen/runpod_style/run", {"input": {"job": {"input": {"gate": str(gate)}}}})
    job_id = job.json()["id"]
    # Runpod's progress_update shape, from a worker: /status shows it while the job runs.
    running = until(
        lambda: (b := get(server, f"/gen/runpod_style/status/{job_id}")).get("progress") and b
    )
    assert running["status"] == "IN_PROGRESS" and running["progress"] == "3/10 images"
    shot = tmp_path.parent / "dashboard-progress.png"  # kept for a look after the run
    dom = dashboard_dom(f"{server.url}/", tmp_path / "profile", shot)
    row = re.search(r'<tr class="call"[^>]*>(?:(?!</tr>).)*?/gen/runpod_style.*?</tr>', dom, re.S)
    assert row is not None, dom
    assert "IN_PROGRESS" in row.group(0)
    assert '<td class="progress">3/10 images</td>' in row.group(0)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gate.touch()
    until(lambda: get(server, f"/gen/runpod_style/status/{job_id}")["status"] == "COMPLETED")
    state = get(server, "/_flash/state")
    (call,) = [c for c in state["recent"] if c.get("id") == job_id]
    assert call["status"] == "COMPLETED" and call["progress"] == "3/10 images"


def events_of(lines: Iterator[str], on_event: Any = None) -> list[tuple[str, Any]]:
    """The server-sent events in ``lines`` up to the end event; ``on_event`` sees each."""
    events: list[tuple[str, Any]] = []
    kind = ""
    for line in lines:
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[len("data: ") :])))
            if on_event is not None:
                on_event(events)
            if kind == "end":
                break
    return events


def test_a_generator_route_streams_its_items_as_events(server: FlashServer, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    url = f"{server.url}/gen/words"

    def open_gate(events: list[tuple[str, Any]]) -> None:
        if events[-1] == ("item", "w0"):
            gate.touch()  # only now may the worker make the rest

    params = {"gate": str(gate), "n": "3"}
    with httpx.stream("GET", url, params=params, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = events_of(r.iter_lines(), open_gate)
    assert events == [
        ("progress", "started"),
        ("item", "w0"),
        ("item", "w1"),
        ("item", "w2"),
        ("end", {"status": "COMPLETED"}),
    ]
    recent = get(server, "/_flash/state")["recent"]
    assert any(c["route"] == "GET /gen/words" and c["status"] == "COMPLETED" for c in recent)


def test_a_generator_route_failing_before_its_first_item_answers_an_error(
    server: FlashServer,
) -> None:
    r = post(server, "/gen/words/broken", {"at_once": True})
    assert r.status_code == 422, r.text  # a ValueError, as a plain route answers it
    assert "no words at all" in r.json()["detail"]


def test_a_generator_route_failing_midway_ends_its_events_with_the_error(
    server: FlashServer,
) -> None:
    url = f"{server.url}/gen/words/broken"
    with httpx.stream("POST", url, json={"at_once": False}, timeout=60) as r:
        assert r.status_code == 200
        events = events_of(r.iter_lines())
    assert events[0] == ("item", "w0")
    (kind, end), *_ = events[1:]
    assert kind == "end" and end["status"] == "FAILED" and len(events) == 2
    assert "the second word is bad" in end["error"]


def test_leaving_a_generator_route_stops_the_generator(server: FlashServer, tmp_path: Path) -> None:
    trace = tmp_path / "closed"
    url = f"{server.url}/gen/words/endless"
    with httpx.stream("GET", url, params={"trace": str(trace)}, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines) == "event: item"
    until(trace.exists)  # the client went away: the worker's generator's finally ran
