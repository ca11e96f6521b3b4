"""A started server's heap is frozen out of the collector's scans, its young generation
collected less often, and both undone at its stop."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from openflash.server import heap
from openflash.server.app import create_app


def test_a_started_server_freezes_its_heap_and_thaws_it_at_stop(tmp_path: Path) -> None:
    (tmp_path / "notes.py").write_text("print('not an endpoint file')\n")
    app = create_app(tmp_path, quiet=True)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok", "endpoints": 0}
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the app, FastAPI's and pydantic's objects, this test's
        young, *older = gc.get_threshold()
        assert young == max(thresholds[0], heap.YOUNG_THRESHOLD) and older == [*thresholds[1:]]
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
