"""Hostile HTTP against `flash run`: every bad request is a 4xx that says what is wrong, never a
500, and nothing runs; then schemathesis fuzzes every route of the OpenAPI schema."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]
KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}

PROJECT = """
from openflash import Endpoint

@Endpoint(name="fuzzed", workers=(0, 2))
async def greet(name: str, times: int = 1, shout: bool = False) -> dict:
    text = (f"hello {name} " * max(0, min(times, 5))).strip()
    return {"text": text.upper() if shout else text}

@Endpoint(name="fuzzed", workers=(0, 2))
def add(a: float, b: float = 0.0) -> float:
    return a + b

api = Endpoint(name="fuzzed-lb", workers=(0, 1))

@api.post("/items")
async def create(name: str, price: float, tags: list[str] | None = None) -> dict:
    return {"name": name, "price": price, "tags": tags or []}

@api.get("/items/{item_id}")
async def read(item_id: int) -> dict:
    return {"id": item_id}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, session_home: Path, uv_cache: Path
) -> Iterator[FlashServer]:
    project = tmp_path_factory.mktemp("fuzzed") / "project"
    write(project / "app.py", PROJECT)
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_API_KEY": KEY,
        "FLASH_MAX_BODY": "100000",
    }
    with FlashServer(project, "--no-reload", "--host", "0.0.0.0", env=env) as running:
        yield running


def _post(server: FlashServer, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=content,
        headers={"content-type": "application/json", **AUTH, **headers},
        timeout=30,
    )


BAD_BODIES = {
    "malformed JSON": [b"{not json", b"", b"[", b'{"input": }', b"\xff\xfe", b"{'input': 1}"],
    "wrong types": [
        b"null",
        b"[1, 2]",
        b'"input"',
        b'{"input": null}',
        b'{"input": []}',
        b'{"input": {"name": 5}}',
        b'{"input": {"name": "x", "times": "many"}}',
        b'{"input": {"name": "x", "times": 1e400}}',
        b'{"input": {"name": "x", "shout": "loud"}}',
        b'{"input": {}}',
    ],
    "deep nesting": [
        b'{"input": {"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        b'{"input": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
    ],
}


def test_bad_bodies_are_4xx_and_say_why(server: FlashServer, report: Report) -> None:
    seen = 0
    for family, bodies in BAD_BODIES.items():
        for body in bodies:
            r = _post(server, "/app/greet/runsync", body)
            assert 400 <= r.status_code < 500, (family, body[:60], r.status_code, r.text[:300])
            assert r.json().get("error") or r.json().get("detail"), r.text[:300]
            seen += 1
    report(
        "HTTP",
        f"{seen} bad bodies to a runsync route: " + ", ".join(BAD_BODIES),
        "each a 4xx (400 or 422) naming what is wrong",
    )


def test_huge_bodies_unknown_routes_wrong_methods(server: FlashServer, report: Report) -> None:
    huge = b'{"input": {"name": "' + b"x" * 200_000 + b'"}}'
    r = _post(server, "/app/greet/runsync", huge)
    assert r.status_code == 413 and "FLASH_MAX_BODY" in r.json()["error"]
    for path in ["/nope", "/app/nope/runsync", "/app/greet/runsync/extra", "/app/greet/status/x"]:
        assert httpx.get(f"{server.url}{path}", headers=AUTH).status_code in (404, 405), path
    assert _post(server, "/app/nope/runsync", b"{}").status_code == 404
    for method in ["GET", "PUT", "DELETE", "PATCH"]:
        r = httpx.request(method, f"{server.url}/app/greet/runsync", headers=AUTH)
        assert r.status_code == 405, (method, r.status_code)
    r = httpx.get(f"{server.url}/app/items/not-a-number", headers=AUTH)
    assert r.status_code == 422
    report(
        "HTTP",
        "a 200 kB body over `FLASH_MAX_BODY=100000`; unknown routes; GET, PUT, DELETE and "
        "PATCH on a POST route; a path parameter of the wrong type",
        "413 naming FLASH_MAX_BODY; 404; 405; 422",
    )


def test_missing_or_wrong_api_keys_are_refused(server: FlashServer, report: Report) -> None:
    url = f"{server.url}/app/greet/runsync"
    body = {"input": {"name": "x"}}
    for headers in [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"Authorization": f"Bearer {KEY}x"},
        {"X-Api-Key": KEY},
    ]:
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.status_code)
    assert httpx.get(f"{server.url}/openapi.json").status_code == 401
    ok = httpx.post(url, json=body, headers=AUTH, timeout=60)
    assert ok.status_code == 200 and ok.json()["output"] == {"text": "hello x"}
    report(
        "HTTP",
        "no key, a wrong key, the right key in the wrong scheme, on a server bound to 0.0.0.0",
        "401 each time (the schema too); the right key works",
    )


def test_odd_outputs_are_sent_not_500(server: FlashServer) -> None:
    r = _post(server, "/app/greet/runsync", b'{"input": {"name": "\\ud800"}}')
    assert r.status_code == 200 and r.json()["output"] == {"text": "hello \ud800"}
    r = _post(server, "/app/add/runsync", b'{"input": {"a": 1e308, "b": 1e308}}')
    assert r.status_code == 200 and r.json()["output"] is None  # Infinity: JSON has none


def test_schemathesis_finds_no_server_error(
    server: FlashServer, tmp_path: Path, report: Report
) -> None:
    st = shutil.which("st") or shutil.which("schemathesis")
    argv = [st] if st else [sys.executable, "-m", "schemathesis.cli"]
    done = subprocess.run(
        [
            *argv,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--request-timeout",
            "30",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert cases and cases[1] == cases[2] and int(cases[1]) > 100, done.stdout[-2000:]
    report(
        "HTTP",
        f"schemathesis: {cases[1]} requests generated from the OpenAPI schema of a project "
        "with queue and load-balanced routes",
        "no 5xx answer",
    )
