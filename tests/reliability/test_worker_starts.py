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
async def where(hold: float = 0.0, gate: str = "") -> dict:
    import asyncio
    import os

    await asyncio.sleep(hold)
    while gate and os.path.exists(gate):  # held until the test removes the gate
        await asyncio.sleep(0.05)
    return {"pid": os.getpid(), "parent": os.getppid()}


@pytest.mark.usefixtures("flash_home")
def test_a_stopped_template_is_replaced_and_no_caller_hangs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, report: Report
) -> None:
    caplog.set_level(logging.WARNING, logger="openflash")
    gate = tmp_path / "gate"

    async def main() -> tuple[int, dict, list[dict], float, list[dict]]:
        await where()  # the first worker is spawned; the template starts beside it
        await asyncio.sleep(1.0)
        pair = await asyncio.gather(where(0.5), where(0.5))  # a second worker: forked
        [template] = {a["parent"] for a in pair} - {os.getpid()}
        os.kill(template, signal.SIGSTOP)
        gate.touch()  # both workers held: the next call needs a third, asked of the template
        held = [asyncio.ensure_future(where(gate=str(gate))) for _ in range(2)]
        await asyncio.sleep(1.0)
        started = time.monotonic()
        try:
            third = await asyncio.wait_for(where(), HANG_GUARD_S)
        finally:
            waited = time.monotonic() - started
            gate.unlink()
            if _state(template) not in (None, "Z"):
                os.kill(template, signal.SIGCONT)
        first_two = await asyncio.wait_for(asyncio.gather(*held), HANG_GUARD_S)
        # the replacement template forks the next worker: four at once need a fourth
        await asyncio.sleep(3.0)
        later = await asyncio.wait_for(
            asyncio.gather(*(where(1.0) for _ in range(4))), HANG_GUARD_S
        )
        return template, third, list(first_two), waited, list(later)

    template, third, first_two, waited, later = asyncio.run(main())
    assert third["pid"] not in {a["pid"] for a in first_two}, "a third worker answered"
    assert third["parent"] == os.getpid(), f"the third worker was spawned: {third}"
    assert f"its template (pid {template}, stopped) did not fork a worker within 10 s" in (
        caplog.text
    ), caplog.text
    assert "it was killed and a new one started" in caplog.text
    assert _wait_gone(template), "the stopped template was killed"
    new_parents = {a["parent"] for a in later} - {os.getpid(), template}
    assert new_parents, f"a later worker was forked by a new template: {later}"
    report(
        "workers",
        "a worker template stopped with SIGSTOP while both workers of its endpoint were busy, "
        "then a call needing a third worker (workersMax=4)",
        f"the call answered in {waited:.1f} s (the fork bound is 10 s) on a spawned worker; the "
        "log named the template's pid as stopped; it was killed, and the next worker was "
        "forked by a new template",
    )


#: How a worker's start-up hook never returns: by sleeping, or by stopping its own process.
HANGS = {
    "never-ready": "time.sleep(3600)",
    "stops-at-start": "os.kill(os.getpid(), signal.SIGSTOP)",
}


def _never_ready_wheel(tmp_path: Path, endpoint: str) -> Path:
    """A package whose `.pth` start-up hook never returns in this endpoint's workers only (a
    real interpreter that never gets to say it is ready); builds and other endpoints are
    untouched."""
    hook = (
        f"import os, signal, time; os.environ.get('OPENFLASH_ENDPOINT') == {endpoint!r} "
        f"and {HANGS[endpoint]}\n"
    )
    name = endpoint.replace("-", "_")
    files = {f"{name}.pth": hook, f"{name}_pkg/__init__.py": ""}
    return make_wheel(tmp_path / "wheels", name, "1.0", files)


@pytest.mark.parametrize("endpoint", list(HANGS))
@pytest.mark.usefixtures("flash_home")
def test_a_worker_that_never_says_ready_fails_its_callers_within_the_bound(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: Report
) -> None:
    monkeypatch.setenv("FLASH_WORKER_START_TIMEOUT", "5")
    wheel = _never_ready_wheel(tmp_path, endpoint)

    @remote(CpuLiveServerless(name=endpoint, workersMax=2), dependencies=[str(wheel)])
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
    stopped = ", stopped" if endpoint == "stops-at-start" else ""
    # The first failure fails every waiting call: the spawned worker's, or (when the pool's
    # second worker, asked of the endpoint's template, ran out of time first) the template's.
    if message.startswith("no worker"):
        assert f"no worker of endpoint {endpoint!r} was started within 5 s (FLASH_WORKER_" in (
            message
        )
        assert "it waited for its worker template (pid " in message, message
        assert f"{stopped}) to finish starting, which was killed" in message, message
    else:
        assert f"a worker of endpoint {endpoint!r} (pid " in message, message
        assert f"{stopped}) did not say it was ready within 5 s (FLASH_WORKER_START_TIMEOUT)" in (
            message
        )
        assert "it was killed" in message, message
        if stopped:
            assert "was stopped (Ctrl-Z or SIGSTOP)" in message, message
        else:
            assert "raise FLASH_WORKER_START_TIMEOUT" in message, message
    pid = int(message.split("(pid ", 1)[1].split(")", 1)[0].split(",")[0])
    assert _wait_gone(pid), f"the process that never got ready (pid {pid}) was killed"
    how = "stops its own process (SIGSTOP)" if stopped else "never returns (it sleeps)"
    report(
        "workers",
        f"a worker whose start-up hook (a package's `.pth`) {how}, three calls at once "
        "under `FLASH_WORKER_START_TIMEOUT=5`",
        f"every caller got WorkerCrashedError in {took:.1f} s naming the endpoint, the pid"
        + (" as stopped" if stopped else "")
        + " and FLASH_WORKER_START_TIMEOUT; the process was killed",
    )
