"""What `flash run` tells about a project: a class that needs constructor arguments (a warning at
start), a template's import-time output (once, prefixed), a GPU endpoint on a machine without
one (the dashboard says where it runs)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from helpers import FlashServer, write


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "notices"
    write(
        root / "helpers.py",
        """
        print("helpers: imported")

        def tag(text):
            return f"<{text}>"
        """,
    )
    write(
        root / "tagged.py",
        """
        from helpers import tag
        from runpod_flash import Endpoint

        @Endpoint(name="notice-tag", workers=(0, 2))
        def tagged(text: str) -> str:
            return tag(text)
        """,
    )
    write(
        root / "scaler.py",
        """
        from runpod_flash import Endpoint

        @Endpoint(name="notice-class")
        class Scaler:
            def __init__(self, factor, offset=0):
                self.factor = factor

            def scale(self, x: float) -> float:
                return x * self.factor
        """,
    )
    write(
        root / "gpu.py",
        """
        from runpod_flash import Endpoint, GpuGroup

        @Endpoint(name="notice-gpu", gpu=GpuGroup.ANY)
        def where(x: int) -> int:
            return x
        """,
    )
    return root


def test_flash_run_notices(
    project: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    with FlashServer(project, "--no-reload", env=env) as server:
        # A warning at start, naming the class, its file and the arguments it needs.
        assert (
            "class Scaler (scaler.py) needs constructor arguments (factor); served over HTTP it "
            "is made with none" in server.output()
        )
        r = httpx.post(f"{server.url}/tagged/runsync", json={"input": {"text": "a"}}, timeout=120)
        assert r.json()["output"] == "<a>", r.text
        deadline = time.monotonic() + 60  # the template starts beside the first worker
        while time.monotonic() < deadline:
            state = httpx.get(f"{server.url}/_flash/state", timeout=30).json()
            if any("helpers" in t["preloaded"] for t in state["templates"]):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no template preloaded helpers: {state['templates']}")
        r = httpx.post(f"{server.url}/gpu/runsync", json={"input": {"x": 3}}, timeout=120)
        assert r.json()["output"] == 3, r.text
        state = httpx.get(f"{server.url}/_flash/state", timeout=30).json()
        time.sleep(0.5)  # output pumps
        lines = [line for line in server.output().splitlines() if "helpers: imported" in line]
        # The server's import of the files, then the first worker (spawned), each prefixed; the
        # template's copy is not shown.
        assert lines == ["[import] helpers: imported", "[notice-tag] helpers: imported"]
    [gpu] = [e for e in state["endpoints"] if e["name"] == "notice-gpu"]
    if shutil.which("nvidia-smi") is None:
        assert gpu["hardware"] == "1 GPU asked, running on the CPU (no GPU here)"
    else:
        assert gpu["hardware"] == "1 GPU"
