"""A started server's heap is frozen out of the collector's scans, and thawed at its stop."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from openflash.server.app import create_app


def test_a_started_server_freezes_its_heap_and_thaws_it_at_stop(tmp_path: Path) -> None:
    (tmp_path / "notes.py").write_text("print('not an endpoint file')\n")
    app = create_app(tmp_path, quiet=True)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok", "endpoints": 0}
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the app, FastAPI's and pydantic's objects, this test's
    assert gc.get_freeze_count() == 0
