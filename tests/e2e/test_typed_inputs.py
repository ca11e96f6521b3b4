"""Typed parameters over HTTP under a real `flash run`: the function gets the declared type.

Queue routes (/runsync, and /run whose input is journaled as JSON and validated again) and
load-balanced routes; a load-balanced route with one model parameter takes FastAPI's flat body
as well as the body naming the parameter.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import FlashServer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "typed"
ORDER = {"id": 7, "parts": [{"name": "bolt", "qty": 2}, {"name": "nut", "qty": 3}]}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, session_home: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[FlashServer]:
    project = tmp_path_factory.mktemp("typed") / "typed"
    shutil.copytree(FIXTURE, project)
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    with FlashServer(project, "--no-reload", env=env) as running:
        yield running


def post(server: FlashServer, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120)


def test_queue_routes_pass_models_nested_optional_and_lists(server: FlashServer) -> None:
    body = {
        "input": {
            "order": ORDER,
            "extra": {"name": "washer", "qty": 1},
            "more": [ORDER["parts"][0]],
        }
    }
    r = post(server, "/shop/order_total/runsync", body)
    assert r.status_code == 200, r.text
    assert r.json()["output"] == {"kinds": ["Order", "Part", "Part", "Part"], "total": 8}
    r = post(server, "/shop/order_total/runsync", {"input": {"order": ORDER}})
    assert r.json()["output"] == {"kinds": ["Order", "Part", "NoneType"], "total": 5}, r.text
    trip = {"stops": [{"x": 0, "y": 0}, {"x": 1, "y": 2}]}
    r = post(
        server, "/shop/trip_length/runsync", {"input": {"trip": trip, "start": {"x": -1, "y": 0}}}
    )
    assert r.json()["output"] == {"kinds": ["Trip", "Point", "Point"], "length": 4.0}, r.text


def test_a_queued_job_validates_its_journaled_input_into_the_types(server: FlashServer) -> None:
    job = post(server, "/shop/order_total/run", {"input": {"order": ORDER}}).json()
    for _ in range(600):
        status = httpx.get(f"{server.url}/shop/order_total/status/{job['id']}", timeout=10).json()
        if status["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
            break
        time.sleep(0.1)
    assert status["status"] == "COMPLETED", status
    assert status["output"] == {"kinds": ["Order", "Part", "NoneType"], "total": 5}


def test_a_bad_nested_field_is_a_422_naming_it(server: FlashServer) -> None:
    bad = {"id": 1, "parts": [{"name": "bolt", "qty": "many"}]}
    r = post(server, "/shop/order_total/runsync", {"input": {"order": bad}})
    assert r.status_code == 422 and "qty" in r.text
    r = post(server, "/shop/orders", bad)
    assert r.status_code == 422 and "qty" in r.text


def test_load_balanced_routes_take_the_named_and_the_flat_body(server: FlashServer) -> None:
    expected = {"kinds": ["Order", "Part", "Part"], "id": 7, "note": None}
    assert post(server, "/shop/orders", {"order": ORDER}).json() == expected
    assert post(server, "/shop/orders", ORDER).json() == expected  # FastAPI's flat form
    trip = {"stops": [{"x": 1, "y": 0}, {"x": 2, "y": 0}]}
    r = post(server, "/shop/trips", {"trip": trip, "factor": 2})
    assert r.json() == {"kinds": ["Trip", "Point", "Point"], "xs": [2.0, 4.0]}, r.text
    r = httpx.put(f"{server.url}/shop/points", json={"x": 1, "y": 2}, timeout=60)
    assert r.json() == {"kinds": ["Point"], "moved": [2.0, 3.0]}, r.text
    r = httpx.put(f"{server.url}/shop/points", json={"point": {"x": 0, "y": 0}}, timeout=60)
    assert r.json() == {"kinds": ["Point"], "moved": [1.0, 1.0]}, r.text
