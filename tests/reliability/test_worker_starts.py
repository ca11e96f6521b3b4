"""Workers that never start: a template stopped with SIGSTOP, and a worker that never says it is
ready. Every caller gets an answer within a bound (FLASH_WORKER_START_TIMEOUT, or the template's
fork bound), the error names the endpoint and the pid, and the stuck process is replaced."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, WorkerCrashedError, remote

from helpers import make_wheel

Report = Callable[[str, str, str], None]

#: Bounds a hang (a test that never ends); not a speed target.
HANG_GUARD_S = 120.0


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _state(pid) in (None, "Z"):
            return True
        time.sleep(0.05)
    return False


@remote(CpuLiveServerless(name="stuck-template", workersMax=4), preload=["json"])
async def where(hold: float = 0.0) -> dict:
    import asyncio
    import os

    await asyncio.sleep(hold)
    return {"pid": os.getpid(), "parent": os.getppid()}


@pytest.mark.usefixtures("flash_home")
def test_a_stopped_template_is_replaced_and_no_caller_hangs(
    caplog: pytest.LogCaptureFixture, report: Report
) -> None:
    caplog.set_level(logging.WARNING, logger="openflash")

    async def main() -> tuple[int, list[dict], float, list[dict]]:
        await where()  # the first worker is spawned; the template starts beside it
        await asyncio.sleep(1.0)
        pair = await asyncio.gather(where(0.5), where(0.5))  # a second worker: forked
        [template] = {a["parent"] for a in pair} - {os.getpid()}
        os.kill(template, signal.SIGSTOP)
        started = time.monotonic()
        try:  # three at once, each longer than the fork bound: the third needs a new worker
            burst = await asyncio.wait_for(
                asyncio.gather(*(where(12.0) for _ in range(3))), HANG_GUARD_S
            )
        finally:
            with_stopped = time.monotonic() - started
            if _state(template) not in (None, "Z"):
                os.kill(template, signal.SIGCONT)
        # the replacement template forks the next worker: four at once need a fourth
        await asyncio.sleep(3.0)
        later = await asyncio.wait_for(
            asyncio.gather(*(where(1.0) for _ in range(4))), HANG_GUARD_S
        )
        return template, list(burst), with_stopped, list(later)

    template, burst, with_stopped, later = asyncio.run(main())
    assert len({a["pid"] for a in burst}) == 3, burst
    assert os.getpid() in {a["parent"] for a in burst}, f"the third worker was spawned: {burst}"
    assert f"its template (pid {template}, stopped) did not fork a worker within 10 s" in (
        caplog.text
    ), caplog.text
    assert "it was killed and a new one started" in caplog.text
    assert _wait_gone(template), "the stopped template was killed"
    new_parents = {a["parent"] for a in later} - {os.getpid(), template}
    assert new_parents, f"a later worker was forked by a new template: {later}"
    report(
        "workers",
        "a worker template stopped with SIGSTOP, then three calls at once needing a new worker "
        "(workersMax=4)",
        f"all three answered ({with_stopped:.1f} s, the fork bound is 10 s); the log named the "
        "template's pid as stopped; it was killed, the worker spawned instead, and the next "
        "worker was forked by a new template",
    )


def _never_ready_wheel(tmp_path: Path) -> Path:
    """A package whose `.pth` start-up hook hangs in this endpoint's workers only (a real
    interpreter that never gets to say it is ready); builds and other endpoints are untouched."""
    hook = (
        "import os, time; os.environ.get('OPENFLASH_ENDPOINT') == 'never-ready' "
        "and time.sleep(3600)\n"
    )
    files = {"hangs_at_start.pth": hook, "hangs_at_start_pkg/__init__.py": ""}
    return make_wheel(tmp_path / "wheels", "hangs_at_start", "1.0", files)


@pytest.mark.usefixtures("flash_home")
def test_a_worker_that_never_says_ready_fails_its_callers_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: Report
) -> None:
    monkeypatch.setenv("FLASH_WORKER_START_TIMEOUT", "5")
    wheel = _never_ready_wheel(tmp_path)

    @remote(CpuLiveServerless(name="never-ready", workersMax=2), dependencies=[str(wheel)])
    def answer() -> int:
        return 42

    async def main() -> tuple[list[BaseException | int], float]:
        started = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(answer() for _ in range(3)), return_exceptions=True), HANG_GUARD_S
        )
        return list(results), time.monotonic() - started

    results, took = asyncio.run(main())
    assert all(isinstance(r, WorkerCrashedError) for r in results), results
    message = str(results[0])
    # The first failure fails every waiting call: the spawned worker's, or (when the pool's
    # second worker, asked of the endpoint's template, ran out of time first) the template's.
    if message.startswith("no worker"):
        assert "no worker of endpoint 'never-ready' was started within 5 s (FLASH_WORKER_" in (
            message
        )
        assert "it waited for its worker template (pid " in message, message
        assert "which was killed" in message, message
    else:
        assert "a worker of endpoint 'never-ready' (pid " in message, message
        assert "did not say it was ready within 5 s (FLASH_WORKER_START_TIMEOUT)" in message
        assert "it was killed" in message and "raise FLASH_WORKER_START_TIMEOUT" in message
    pid = int(message.split("(pid ", 1)[1].split(")", 1)[0].split(",")[0])
    assert _wait_gone(pid), f"the process that never got ready (pid {pid}) was killed"
    report(
        "workers",
        "a worker whose start-up hook (a package's `.pth`) never returns, three calls at once "
        "under `FLASH_WORKER_START_TIMEOUT=5`",
        f"every caller got WorkerCrashedError in {took:.1f} s naming the endpoint, the pid and "
        "FLASH_WORKER_START_TIMEOUT; the worker was killed",
    )
