"""A page kept open in a real headless Chromium, driven through chromedriver's W3C WebDriver API
(plain HTTP, so no client library): load a page, run script in it, click, wait, screenshot.

Tests use it where a page must stay open while something happens (the dashboard's live
updates); ``helpers.chromium`` serves the one-shot loads."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import CHROMIUM_FLAGS, free_port

__all__ = ["Page", "dashboard_dom", "open_page"]

_ELEMENT = "element-6066-11e4-a52e-4f735466cecc"


class Page:
    def __init__(self, driver: str, session: str) -> None:
        self._base = f"{driver}/session/{session}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        answer = httpx.request(method, f"{self._base}{path}", json=body, timeout=120)
        value = answer.json().get("value")
        if answer.status_code != 200:
            raise AssertionError(f"webdriver {method} {path}: {value}")
        return value

    def go(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body: ``return ...``) in the page; its value."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, *args: Any, what: str, timeout: float = 120) -> Any:
        """Until ``script`` returns something truthy, which is returned; fails naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                body = self.js("return document.body.innerText")
                raise AssertionError(f"the page never showed {what}; it reads:\n{body[-3000:]}")
            time.sleep(0.2)

    def click(self, css: str) -> None:
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        assert isinstance(found, dict) and found, f"no element {css!r} to click: {found}"
        element = found.get(_ELEMENT) or next(iter(found.values()))
        self._call("POST", f"/element/{element}/click", {})

    def resize(self, width: int, height: int) -> None:
        self._call("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self._call("GET", "/screenshot"))
        path.write_bytes(data)
        return data


@contextmanager
def open_page(profile: Path, width: int = 1280, height: int = 1000) -> Iterator[Page]:
    """A Chromium window through chromedriver, closed (both processes ended) afterwards."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        if os.environ.get("OPENFLASH_REQUIRE_BROWSER"):
            pytest.fail("Chromium and chromedriver are required here (OPENFLASH_REQUIRE_BROWSER)")
        pytest.skip("Chromium or chromedriver is not installed (Debian: chromium-driver)")
    port = free_port()
    proc = subprocess.Popen(
        [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    session = None
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/status", timeout=5).json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        options = {
            "binary": browser,
            "args": [
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
            ],
        }
        created = httpx.post(
            f"{url}/session",
            json={"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}},
            timeout=120,
        )
        assert created.status_code == 200, created.text
        session = created.json()["value"]["sessionId"]
        page = Page(url, session)
        # The window holds the page and the browser's own bars: make the page width x height.
        extra = page.js("return [outerWidth - innerWidth, outerHeight - innerHeight]")
        page.resize(width + extra[0], height + extra[1])
        yield page
    finally:
        if session is not None:
            httpx.delete(f"{url}/session/{session}", timeout=60)
        proc.terminate()
        proc.wait(timeout=30)


def dashboard_dom(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The dashboard at ``url`` once it has rendered what the server pushed, as HTML (and a
    1280x900 screenshot). A one-shot ``chromium --dump-dom`` cannot load it: its live feed is
    a request that never ends, and headless Chromium's virtual time waits for requests."""
    with open_page(profile, 1280, 900) as page:
        page.go(url)
        page.wait("return document.body.dataset.loaded === 'true'", what="the dashboard loaded")
        if screenshot is not None:
            page.screenshot(screenshot)
        return str(page.js("return document.documentElement.outerHTML"))
