"""The dashboard kept open in a real Chromium while calls are made: they appear without a reload
(server-sent events), and a call opens into its detail, values shown as text, never markup."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import FlashServer, write
from webdriver import open_page

APP = """
    import sys
    from runpod_flash import CpuLiveServerless, remote

    cpu = CpuLiveServerless(name="live-demo", workersMax=1)

    @remote(cpu, dependencies=["six==1.17.0"])
    def shout(text: str) -> dict:
        print(f"shouting {text}", flush=True)
        return {"said": text.upper()}

    def check(text):
        raise ValueError(f"no vowels allowed: {text}")

    @remote(cpu, dependencies=["six==1.17.0"])
    def explode(text: str) -> None:
        print(f"about to fail on {text}", file=sys.stderr, flush=True)
        check(text)
"""

MARKUP = "<b>bold</b><img src=x onerror=\"document.title='owned'\">"


@pytest.fixture
def server(
    tmp_path: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[FlashServer]:
    project = tmp_path / "livedemo"
    write(project / "app.py", APP)
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    with FlashServer(project, "--no-reload", env=env) as running:
        yield running


ROW = "return document.querySelector(`tr.call[data-id='${arguments[0]}']`)?.dataset.status"


def test_calls_appear_live_and_open_into_their_detail(server: FlashServer, tmp_path: Path) -> None:
    with open_page(tmp_path / "profile") as page:
        page.go(f"{server.url}/")
        page.wait("return document.querySelector('#live.on') !== null", what="a live feed")
        page.wait(
            "return document.querySelector('[data-endpoint=\"live-demo\"] .badge.ready')",
            what="the endpoint ready",
        )
        page.js("window.sameDocument = 'yes'")  # gone if the page ever reloads

        # A call made while the page is open appears in it, with its status, no reload.
        done = httpx.post(
            f"{server.url}/app/shout/runsync", json={"input": {"text": MARKUP}}, timeout=120
        ).json()
        assert done["status"] == "COMPLETED", done
        assert page.wait(ROW, done["id"], what="the runsync call") == "COMPLETED"

        # A job's status changes are pushed too: queued, then FAILED with its error's first line.
        job = httpx.post(
            f"{server.url}/app/explode/run", json={"input": {"text": "xyz"}}, timeout=60
        ).json()
        page.wait(ROW, job["id"], what="the /run job's row")
        failed = "return document.querySelector(`tr.call[data-id='${arguments[0]}'][data-status='FAILED']`)"
        page.wait(failed, job["id"], what="the job FAILED")
        row_text = page.js(
            "return document.querySelector(`tr.call[data-id='${arguments[0]}']`).innerText",
            job["id"],
        )
        assert "ValueError: no vowels allowed: xyz" in row_text
        assert page.js("return window.sameDocument") == "yes"
        assert page.js("return performance.getEntriesByType('navigation').length") == 1
        fetched = page.js("return performance.getEntriesByType('resource').map(e => e.name)")
        assert not [u for u in fetched if "/_flash/state" in u], fetched  # pushed, not polled

        # The failed job's detail: the error, the traceback from the user's frames, its worker.
        page.click(f"tr.call[data-id='{job['id']}']")
        detail = page.wait(
            "const d = document.querySelector('#call-detail');"
            "return !d.hidden && d.dataset.call === arguments[0] && d.innerText",
            job["id"],
            what="the job's detail",
        )
        error = page.js("return document.querySelector('#call-detail .call-error').innerText")
        assert error.startswith("ValueError: no vowels allowed: xyz"), error
        traceback = page.js("return document.querySelector('#call-detail .traceback').innerText")
        frames = [line for line in traceback.splitlines() if line.startswith('  File "')]
        # The user's frames, from the function called to the line that raised; none of openflash.
        assert "app.py" in frames[0] and frames[0].endswith("in explode"), traceback
        assert frames[-1].endswith("in check"), traceback
        assert not [f for f in frames if "/openflash/" in f or "/runpod_flash/" in f], traceback
        assert "six==1.17.0" in detail and "attempt" in detail
        shown_pid = page.js(
            "const dt = [...document.querySelectorAll('#call-detail dt')]"
            ".find(d => d.textContent === 'worker pid'); return dt && dt.nextSibling.textContent"
        )
        assert shown_pid and f"pid {shown_pid}" in row_text, (shown_pid, row_text)
        assert "about to fail on xyz" in detail  # what its worker printed during the call
        failed_shot = page.screenshot(tmp_path / "dashboard-failed-call.png")
        assert failed_shot[:8] == b"\x89PNG\r\n\x1a\n"
        assert '"text": "xyz"' in detail  # its input

        # The successful call's detail: input and output shown as text, never as markup.
        page.click("#call-detail button.close")
        page.wait("return document.querySelector('#call-detail').hidden", what="the detail closed")
        page.click(f"tr.call[data-id='{done['id']}']")
        detail = page.wait(
            "const d = document.querySelector('#call-detail');"
            "return d.dataset.call === arguments[0] && d.innerText",
            done["id"],
            what="the runsync call's detail",
        )
        assert MARKUP.replace('"', '\\"') in detail and MARKUP.upper().replace('"', '\\"') in detail
        assert f"shouting {MARKUP}" in detail
        assert (
            page.js("return document.querySelectorAll('#call-detail b, #call-detail img').length")
            == 0
        )
        assert page.js("return document.title") == "openflash"

        shot = tmp_path / "dashboard-call-detail.png"
        data = page.screenshot(shot)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24])[0] > 0
        assert len(data) > 20_000  # a page with content, not a blank one

        # A call the dashboard does not know is a clear 404, not a 500.
        missing = httpx.get(f"{server.url}/_flash/calls/nope", timeout=30)
        assert missing.status_code == 404 and "no call 'nope'" in missing.text


def test_an_open_live_feed_ends_when_the_server_stops_and_holds_nothing_up(
    server: FlashServer,
) -> None:
    job = httpx.post(
        f"{server.url}/app/shout/run", json={"input": {"text": "kept"}}, timeout=60
    ).json()
    status = f"{server.url}/app/shout/status/{job['id']}"
    for _ in range(600):  # until it ends, so that the next server has nothing to resume
        if httpx.get(status, timeout=60).json()["status"] == "COMPLETED":
            break
        time.sleep(0.1)
    with httpx.stream("GET", f"{server.url}/_flash/live", timeout=60) as live:
        assert live.headers["content-type"].startswith("text/event-stream")
        lines = live.iter_lines()
        assert next(line for line in lines if line.startswith("event: ")) == "event: state"
        first = next(line for line in lines if line.startswith("data: "))
        assert '"live-demo"' in first  # the whole picture, at once
        server.stop()  # SIGTERM, as Ctrl-C would
        for _ in lines:  # the server ends the stream itself, cleanly (no error here)
            pass
    assert server.proc is not None and server.proc.returncode != -9, server.output()  # no SIGKILL
    # uvicorn had nothing left to cancel: no open stream made it wait out its grace period.
    assert "graceful shutdown exceeded" not in server.output(), server.output()

    # The next server knows no recent calls, but a journaled job's detail is still there.
    server.start()
    detail = httpx.get(f"{server.url}/_flash/calls/{job['id']}", timeout=60).json()
    assert detail["kind"] == "run" and detail["endpoint"] == "live-demo", detail
    assert detail["status"] == "COMPLETED" and '"KEPT"' in detail["output"]["json"], detail
