"""`flash run` and the call semantics peers offer: /cancel stops the work in its worker."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import FlashServer

WORKER = """
import asyncio
import time

from runpod_flash import Endpoint


@Endpoint(name="calls-async", workers=1)
async def ticking(path: str) -> str:
    while True:
        with open(path, "a") as f:
            f.write("tick\\n")
        await asyncio.sleep(0.02)


@Endpoint(name="calls-sync", workers=1)
def busy(path: str) -> str:
    while True:
        with open(path, "a") as f:
            f.write("tick\\n")
        time.sleep(0.02)


@Endpoint(name="calls-sync", workers=1)
def echo(value: str) -> str:
    return value
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, session_home: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[FlashServer]:
    project = tmp_path_factory.mktemp("calls") / "calls"
    project.mkdir()
    (project / "worker.py").write_text(textwrap.dedent(WORKER))
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    with FlashServer(project, "--no-reload", env=env) as running:
        yield running


def post(server: FlashServer, path: str, body: Any = None) -> dict[str, Any]:
    r = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def status(server: FlashServer, path: str) -> dict[str, Any]:
    return httpx.get(f"{server.url}{path}", timeout=30).json()  # type: ignore[no-any-return]


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def stopped(path: Path) -> bool:
    before = path.read_text()
    time.sleep(0.5)
    return path.read_text() == before


@pytest.mark.parametrize("route", ["/worker/ticking", "/worker/busy"])
def test_cancel_stops_the_work_in_its_worker(
    server: FlashServer, route: str, tmp_path: Path
) -> None:
    ticks = tmp_path / "ticks"
    job = post(server, f"{route}/run", {"input": {"path": str(ticks)}})
    wait_for(lambda: ticks.exists() and ticks.read_text(), "the job ticked")
    assert post(server, f"{route}/cancel/{job['id']}")["status"] == "CANCELLED"
    # a sync busy loop stops when its worker is killed, past the grace period (2 s)
    wait_for(lambda: stopped(ticks), "the work stopped", timeout=10)
    final = status(server, f"{route}/status/{job['id']}")
    assert final["status"] == "CANCELLED" and "output" not in final
    if route == "/worker/busy":  # its endpoint works on, on a new worker
        assert post(server, "/worker/echo/runsync", {"input": {"value": "hi"}})["output"] == "hi"
