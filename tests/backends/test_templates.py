"""Workers forked from templates: correct, isolated, replaced when the template dies, spawned
instead where forking is unsafe, and fast with torch imported."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, remote
from openflash.backends.templates import Template
from openflash.runtime import process

from helpers import make_wheel


def run(coro):
    return asyncio.run(coro)


@remote(CpuLiveServerless(name="forked", workersMax=3), preload=["json"])
async def mark(value: int, hold: float = 0.0) -> dict:
    import asyncio
    import json
    import os

    seen = getattr(json, "_openflash_mark", None)
    json._openflash_mark = value  # module state of this worker only
    await asyncio.sleep(hold)
    return {"pid": os.getpid(), "parent": os.getppid(), "seen": seen}


@pytest.mark.usefixtures("flash_home")
def test_forked_workers_answer_and_share_no_state() -> None:
    async def main() -> tuple[dict, list[dict]]:
        first = await mark(0)  # spawned, while the endpoint's template starts
        await asyncio.sleep(1.0)
        busy = asyncio.ensure_future(mark(0, 1.0))  # keeps the first worker busy
        burst = await asyncio.gather(*(mark(i, 0.5) for i in range(1, 3)))
        await busy
        return first, list(burst)

    first, forked = run(main())
    stats = process.get_runtime().pool_stats(mark.endpoint)
    assert stats is not None and isinstance(stats["detail"], list)
    assert sorted(w["started"] for w in stats["detail"]) == ["forked", "forked", "spawned"]
    assert first["parent"] == os.getpid(), "the first worker is spawned"
    pids = {a["pid"] for a in forked}
    parents = {a["parent"] for a in forked}
    assert len(pids) == 2 and first["pid"] not in pids, forked  # two new workers
    assert parents != {os.getpid()} and len(parents) == 1, "forked from one template"
    assert all(a["seen"] is None for a in forked), "no worker saw another's module state"


@pytest.mark.usefixtures("flash_home")
def test_a_killed_template_is_replaced_and_calls_in_flight_finish() -> None:
    async def main() -> tuple[int, dict, list[dict]]:
        await mark(0)  # the first worker is spawned; the template starts beside it
        await asyncio.sleep(1.0)
        a, b = await asyncio.gather(mark(1, 0.3), mark(2, 0.3))  # a second worker: forked
        forked = a if a["parent"] != os.getpid() else b
        template = forked["parent"]
        assert template != os.getpid()
        in_flight = asyncio.ensure_future(mark(3, 1.0))
        await asyncio.sleep(0.3)
        os.kill(template, signal.SIGKILL)
        await asyncio.sleep(0.2)
        burst = await asyncio.gather(*(mark(i, 0.5) for i in range(3)))
        return template, await in_flight, list(burst)

    template, finished, burst = run(main())
    assert finished["seen"] is not None  # answered by a worker that was already running
    new_parents = {a["parent"] for a in burst} - {os.getpid()}
    assert new_parents and template not in new_parents, burst  # forked from a new template


def test_a_module_that_starts_a_thread_makes_its_template_spawn(
    flash_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wheel = make_wheel(
        tmp_path / "wheels",
        "threader",
        "1.0",
        {"threader.py": "import threading, time\n"
         "threading.Thread(target=time.sleep, args=(3600,), daemon=True, name='busy').start()\n"},
    )  # fmt: skip

    @remote(CpuLiveServerless(name="threaded", workersMax=2), dependencies=[str(wheel)])
    def parent(hold: float = 0.0) -> int:
        import os
        import time

        import threader  # noqa: F401

        time.sleep(hold)
        return os.getppid()

    async def second_worker() -> int:
        busy = asyncio.ensure_future(parent(1.0))  # keeps the first worker busy
        await asyncio.sleep(0.2)
        answer = await parent()
        await busy
        return answer

    with caplog.at_level(logging.DEBUG, logger="openflash"):
        assert run(parent()) == os.getpid()  # an endpoint's first worker is always spawned
        deadline = time.monotonic() + 60  # its template imports threader beside it
        while "spawned, not forked" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "spawned, not forked: threads were started by the imports (busy)" in caplog.text
        assert run(second_worker()) == os.getpid(), "the next worker is spawned too, not forked"


def test_flash_fork_0_spawns(flash_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_FORK", "0")
    process.shutdown()
    assert run(mark(5))["parent"] == os.getpid()


def _torch_wheel() -> str | None:
    found = sorted(Path("/opt/wheels").glob("torch-*+cpu-*.whl"))
    return os.environ.get("BENCH_TORCH") or (str(found[-1]) if found else None)


@pytest.mark.skipif(_torch_wheel() is None, reason="needs a CPU torch wheel in /opt/wheels")
@pytest.mark.usefixtures("flash_home")
def _our_template_ready(timeout: float = 300.0) -> None:
    """Wait until a template of this process has said it is ready (its note in the store)."""
    from openflash._settings import Settings

    notes = Settings.from_env().home / "templates"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for note in notes.glob("*.json"):
            try:
                stat = Path(f"/proc/{note.stem}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == os.getpid():
                return
        time.sleep(0.1)
    raise AssertionError("no template of this process became ready")


def test_a_worker_forked_from_a_torch_template_computes(tmp_path: Path) -> None:
    @remote(CpuLiveServerless(name="torch-forked", workersMax=2), dependencies=[_torch_wheel()])
    async def matmul(n: int, hold: str = "") -> dict:
        import asyncio
        import os

        import torch

        while hold and not os.path.exists(hold):  # busy until the test says
            await asyncio.sleep(0.02)
        x = torch.ones(n, n) @ torch.ones(n, n)
        return {"sum": float(x.sum()), "parent": os.getppid(), "pid": os.getpid()}

    first = run(matmul(8))  # spawned, while the template imports torch beside it
    assert first["sum"] == 8.0 * 8 * 8
    _our_template_ready()
    release = tmp_path / "release"

    async def second_worker() -> dict:
        # The first worker stays busy until the second answered, however long it takes to start.
        busy = asyncio.ensure_future(matmul(8, str(release)))
        await asyncio.sleep(0.1)
        answer = await matmul(16)
        release.touch()
        await busy
        return answer

    answer = run(second_worker())
    assert answer["sum"] == 16.0 * 16 * 16
    assert answer["pid"] != first["pid"] and answer["parent"] != os.getpid(), "forked"


def test_templates_show_on_the_dashboard_and_in_env_ls(
    tmp_path: Path, session_home: Path, uv_cache: Path
) -> None:
    import httpx

    from helpers import FlashServer, write

    project = tmp_path / "project"
    write(
        project / "stats.py",
        """
        import statistics

        from openflash import Endpoint

        @Endpoint(name="templated", workers=(1, 2), preload=["fractions"])
        async def mean(values: list[float]) -> float:
            return statistics.mean(values)
        """,
    )
    env = {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    with FlashServer(project, "--no-reload", env=env) as server:
        r = httpx.post(
            f"{server.url}/stats/runsync", json={"input": {"values": [1, 2, 3]}}, timeout=60
        )
        assert r.json()["output"] == 2
        deadline = time.monotonic() + 30  # the template starts beside the first worker
        while True:
            state = httpx.get(f"{server.url}/_flash/state", timeout=30).json()
            ready = [t for t in state["templates"] if "statistics" in t["preloaded"]]
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        [template] = ready
        assert "fractions" in template["preloaded"] and template["rss"] > 0
        listed = _env_ls(env)
        assert "worker templates" in listed
        [line] = [line for line in listed.splitlines() if f"│ {template['pid']} " in line]
        assert "statistics" in line and template["environment"][:8] in line
    # The server stopped: its template is gone from the list.
    assert f"│ {template['pid']} " not in _env_ls(env)


def _env_ls(env: dict[str, str]) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "openflash", "env", "ls"],
        env={**os.environ, **env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr  # the CLI prints its tables on stderr


def test_a_template_started_as_another_is_retired_gets_ready_and_is_read() -> None:
    """As Forking does when the project's files changed (or a template is stuck): the old one
    closed and a new one started in the same step. The new socket takes the number the old
    one had; the loop must watch it (not the old registration, left stale by the close, nor
    have it dropped when the old reader ends), or the new template's ready is never read."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": src}

    async def main() -> None:
        old = Template(Path(sys.executable), env, Path.cwd(), ())
        await old.ensure_started()
        new = Template(Path(sys.executable), env, Path.cwd(), ())
        closing = asyncio.ensure_future(old.close())
        await asyncio.wait_for(new.ensure_started(), 20)  # never, before: READY_TIMEOUT_S
        await closing  # its reader ended: the new one's registration is left alone
        assert new.pid is not None and new._reader is not None
        os.kill(new.pid, signal.SIGKILL)
        await asyncio.wait_for(new._reader, 10)  # its end is seen
        await new.close()

    run(main())
