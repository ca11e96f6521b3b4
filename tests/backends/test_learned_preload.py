"""Learned preload: what an endpoint's workers imported during their first calls is recorded next
to its environment, and the next template imports it (after the fork-safety check); a changed
project file invalidates the record; a template outlives its workers, so that a pool scaled to
zero forks its next worker."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openflash.envs.preload_records import RECORDS_FOLDER
from openflash.runtime import process

from helpers import make_wheel, write

#: The function imports its module by a computed name: reading its code cannot see it.
APP = """
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="{name}", workersMax=2, idleTimeout={idle}),
        dependencies=[{wheel!r}])
async def probe(hold: float = 0.0) -> dict:
    import asyncio, importlib, os, sys

    before = "learnme.deep" in sys.modules
    module = importlib.import_module("learnme" + ".deep")
    await asyncio.sleep(hold)
    return {{"before": before, "value": module.VALUE, "parent": os.getppid(), "pid": os.getpid()}}
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _project(tmp_path: Path, name: str, idle: int = 60) -> Callable[..., Any]:
    """A project folder with the endpoint (app.py) and a helper file, imported; its ``probe``."""
    wheel = make_wheel(
        tmp_path / "wheels",
        "learnme",
        "1.0",
        {"learnme/__init__.py": "", "learnme/deep.py": "VALUE = 42\n"},
    )
    project = tmp_path / f"project-{name}"
    write(project / "app.py", APP.format(name=name, idle=idle, wheel=str(wheel)))
    write(project / "helper.py", "HELP = 1\n")
    sys.path.insert(0, str(project))
    try:
        sys.modules.pop("app", None)
        module = importlib.import_module("app")
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("app", None)
    probe: Callable[..., Any] = module.probe
    return probe


def _records(home: Path, endpoint: str) -> list[dict[str, Any]]:
    found = []
    for path in home.glob(f"envs/*/{RECORDS_FOLDER}/*.json"):
        data = json.loads(path.read_text())
        if data["endpoint"] == endpoint:
            found.append({**data, "path": path})
    return found


def _template(deadline_s: float = 120) -> dict[str, Any]:
    """The runtime's template once it is ready (it starts beside the first worker)."""
    deadline = time.monotonic() + deadline_s
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


def test_the_next_template_preloads_what_the_workers_imported(
    fresh_home: Path, tmp_path: Path
) -> None:
    probe = _project(tmp_path, "learner")
    first = run(probe())
    assert first["value"] == 42 and first["before"] is False
    [record] = _records(fresh_home, "learner")
    learned = record["functions"]["probe"]
    assert learned.index("learnme") < learned.index("learnme.deep"), "in the order imported"
    # Nothing of openflash's runtime nor of the project is recorded: only the environment's
    # modules and the standard library's.
    assert not [m for m in learned if m.split(".")[0] in ("openflash", "app", "helper")]

    process.shutdown()  # a new process, as it were: its template reads the record
    assert run(probe())["parent"] == os.getpid()  # the first worker is spawned
    template = _template()
    assert "learnme.deep" in template["preloaded"] and template["learned"] >= 2, template
    forked = run(_second_worker(probe))
    assert forked["parent"] == template["pid"], "forked from the template"
    assert forked["before"] is True, "the template had imported learnme.deep before the fork"


def test_a_changed_project_file_invalidates_the_record(fresh_home: Path, tmp_path: Path) -> None:
    probe = _project(tmp_path, "edited")
    run(probe())
    [before] = _records(fresh_home, "edited")
    assert "learnme.deep" in before["functions"]["probe"]

    helper = tmp_path / "project-edited" / "helper.py"
    helper.write_text("HELP = 2  # edited\n")
    process.shutdown()
    assert run(probe())["before"] is False
    template = _template()
    assert "learnme.deep" not in template["preloaded"] and template["learned"] == 0, template
    forked = run(_second_worker(probe))
    assert forked["parent"] == template["pid"]
    assert forked["before"] is False, "the record of the older project was not preloaded"
    [after] = _records(fresh_home, "edited")  # learned again, for this version; the old one gone
    assert after["fingerprint"] != before["fingerprint"]
    assert not before["path"].exists()


def test_a_pool_scaled_to_zero_forks_and_the_template_stops_when_idle(
    fresh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_TEMPLATE_IDLE_TIMEOUT", "5")
    process.shutdown()
    probe = _project(tmp_path, "zero", idle=1)
    first = run(probe())
    template = _template()

    def workers() -> int:
        stats = process.get_runtime().pool_stats(probe.endpoint)  # type: ignore[attr-defined]
        return int(stats["workers"]) if stats else 0

    deadline = time.monotonic() + 60
    while workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers() == 0, "the worker idled out"
    again = run(probe())
    assert again["pid"] != first["pid"] and again["parent"] == template["pid"], "forked"
    deadline = time.monotonic() + 60
    while process.get_runtime().templates() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.get_runtime().templates() == [], "the template stopped once idle"
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(template["pid"], 0)
            time.sleep(0.1)


def test_learned_imports_that_start_threads_are_dropped_not_forking(
    fresh_home: Path, tmp_path: Path
) -> None:
    wheel = make_wheel(
        tmp_path / "wheels",
        "spinner",
        "1.0",
        {"spinner/__init__.py": "",
         "spinner/spin.py": "import threading, time\n"
         "threading.Thread(target=time.sleep, args=(3600,), daemon=True, name='spin').start()\n"},
    )  # fmt: skip
    from openflash import CpuLiveServerless, remote

    @remote(CpuLiveServerless(name="spinning", workersMax=2), dependencies=[str(wheel)])
    async def spin(hold: float = 0.0) -> dict:
        import asyncio
        import importlib
        import os

        importlib.import_module("spinner" + ".spin")
        await asyncio.sleep(hold)
        return {"parent": os.getppid()}

    run(spin())
    [record] = _records(fresh_home, "spinning")
    assert "spinner.spin" in record["functions"]["spin"]
    process.shutdown()
    run(spin())
    template = _template()  # the one started without the learned imports
    assert "spinner.spin" not in template["preloaded"], template
    forked = run(_second_worker(spin))  # type: ignore[arg-type]
    assert forked["parent"] == template["pid"], "still forked, from the code's imports"
