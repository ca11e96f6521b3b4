"""Learned-preload records refused: one planted by another user (or writable by others), garbled
or unreadable is told in a warning naming the file, and its template imports nothing of it."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openflash.envs.preload_records import RECORDS_FOLDER, learned_modules
from openflash.envs.store import READY_MARKER
from openflash.runtime import process

from helpers import make_wheel, write

Report = Callable[[str, str, str], None]

APP = """
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="{name}", workersMax=2), dependencies=[{wheel!r}])
async def probe(hold: float = 0.0) -> dict:
    import asyncio, importlib, os, sys

    before = "learnme.deep" in sys.modules
    module = importlib.import_module("learnme" + ".deep")
    await asyncio.sleep(hold)
    return {{"before": before, "value": module.VALUE, "parent": os.getppid()}}
"""


def _project(tmp_path: Path, name: str) -> Callable[..., Any]:
    wheel = make_wheel(
        tmp_path / "wheels",
        "learnme",
        "1.0",
        {"learnme/__init__.py": "", "learnme/deep.py": "VALUE = 42\n"},
    )
    project = tmp_path / f"project-{name}"
    write(project / "app.py", APP.format(name=name, wheel=str(wheel)))
    sys.path.insert(0, str(project))
    try:
        sys.modules.pop("app", None)
        module = importlib.import_module("app")
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("app", None)
    probe: Callable[..., Any] = module.probe
    return probe


def _template() -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready = [t for t in process.get_runtime().templates() if t["pid"]]
        if ready:
            return ready[0]
        time.sleep(0.05)
    raise AssertionError("no template got ready")


async def _second_worker(probe: Callable[..., Any]) -> dict[str, Any]:
    busy = asyncio.ensure_future(probe(1.0))  # keeps the first worker busy
    await asyncio.sleep(0.2)
    answer: dict[str, Any] = await probe()
    await busy
    return answer


def _plant(path: Path) -> str:
    """Make the record another user's (root can), else writable by others."""
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        return "owned by another user (nobody)"
    path.chmod(0o666)
    return "writable by others (0666)"


def test_a_planted_or_garbled_record_is_refused_and_never_preloaded(
    fresh_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, report: Report
) -> None:
    caplog.set_level(logging.WARNING, logger="openflash")
    probe = _project(tmp_path, "refuser")
    assert asyncio.run(probe())["value"] == 42
    [record] = fresh_home.glob(f"envs/*/{RECORDS_FOLDER}/*.json")
    assert "learnme.deep" in json.loads(record.read_text())["functions"]["probe"]

    held = []
    planted = _plant(record)
    garbled = '{"endpoint": "refuser", "functions": {"probe": ["learnme.deep"'
    for case, prepare in [
        (planted, lambda: None),
        ("garbled JSON", lambda: _rewrite(record, garbled.encode())),
        ("not UTF-8", lambda: _rewrite(record, b"\xff\xfe{}")),
    ]:
        prepare()
        caplog.clear()
        process.shutdown()  # a new runtime: its template reads the record
        assert asyncio.run(probe())["parent"] == os.getpid()  # spawned; the template starts
        template = _template()
        assert "learnme.deep" not in template["preloaded"] and template["learned"] == 0, (
            case,
            template,
        )
        forked = asyncio.run(_second_worker(probe))
        assert forked["parent"] == template["pid"], "forked from the template"
        assert forked["before"] is False, f"{case}: nothing of the record was imported"
        assert f"the learned-preload record {record} was refused" in caplog.text, (
            case,
            caplog.text,
        )
        held.append(case)
    report(
        "store",
        "an endpoint's learned-preload record replaced by one "
        + ", then one of ".join(held)
        + " (each before a new runtime's template started)",
        "each refused with a warning naming the file; the template preloaded nothing of it (a "
        "forked worker had not imported the recorded module) and calls answered",
    )


def _rewrite(record: Path, data: bytes) -> None:
    record.unlink()
    record.write_bytes(data)
    record.chmod(0o644)


def test_learned_modules_refuses_every_bad_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openflash")
    environment = tmp_path / "envs" / "key"
    folder = environment / RECORDS_FOLDER
    folder.mkdir(parents=True, mode=0o700)
    environment.chmod(0o700)
    (environment / READY_MARKER).write_text("{}")
    good = {"endpoint": "e", "functions": {"f": ["json", "email.parser"]}}
    record = folder / "good.json"
    record.write_text(json.dumps(good))
    assert learned_modules(record) == ("json", "email.parser")
    assert learned_modules(folder / "absent.json") == () and "refused" not in caplog.text
    bad = {
        "garbled.json": b"{not json",
        "not-a-record.json": b'["json"]',
        "binary.json": b"\xff\xfe",
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (folder / "shared.json").write_text(json.dumps(good))
    (folder / "shared.json").chmod(0o666)
    (folder / "link.json").symlink_to(record)
    (folder / "folder.json").mkdir()
    for name in [*bad, "shared.json", "link.json", "folder.json"]:
        caplog.clear()
        assert learned_modules(folder / name) == (), name
        assert f"the learned-preload record {folder / name} was refused" in caplog.text, name
