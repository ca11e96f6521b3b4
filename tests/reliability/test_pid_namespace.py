"""Workers in the namespace mode (a system layer or a volume) get a PID namespace of their own:
they cannot read their caller's /proc/<pid>/environ, and nested calls, crash reports,
cancellation and workers forked from templates work there as elsewhere. The relocated mode
(FLASH_NAMESPACES=off) has no PID isolation, and says so."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, NetworkVolume, WorkerCrashedError, remote
from openflash.deps.namespace_mode import NO_PID_ISOLATION, layer_mode
from openflash.runtime import process

Report = Callable[[str, str, str], None]

namespaces = pytest.mark.skipif(
    not layer_mode().namespaces, reason="this kernel refuses unprivileged namespaces"
)

#: A volume puts the endpoint's workers in a namespace (as a system layer does), cheaply.
VOLUME = NetworkVolume(name="pid-isolation")


@remote(CpuLiveServerless(name="pid-helper"))
async def double(x: int) -> int:
    return 2 * x


@remote(CpuLiveServerless(name="pid-isolated", networkVolume=VOLUME, workersMax=1))
async def peek(caller: int, action: str = "", path: str = "") -> dict:
    import ctypes
    import os
    import signal
    import time

    if action == "kill-self":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "segfault":
        ctypes.string_at(0)
    elif action == "busy":  # a sync busy loop: only killing its worker stops it
        while True:
            with open(path, "a") as f:
                f.write("tick\n")
            time.sleep(0.02)
    try:
        with open(f"/proc/{caller}/environ", "rb") as f:
            environ = f.read().decode(errors="replace")
    except OSError as e:
        environ = type(e).__name__
    visible = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    nested = await double(21) if action == "nested" else None
    return {"environ": environ, "pid": os.getpid(), "visible": visible, "nested": nested}


@pytest.fixture
def caller_environ(flash_home: Path) -> Iterator[str]:
    """What a worker must not read: this process's environment block, as /proc shows it."""
    process.shutdown()  # a runtime that reads this test's settings
    yield Path(f"/proc/{os.getpid()}/environ").read_bytes().decode(errors="replace")
    process.shutdown()


def _call(*args: object) -> dict | BaseException:
    try:
        result: dict = asyncio.run(peek(*args))
    except BaseException as e:  # the error is the result under test
        return e
    return result


def _out_of_reach(seen: dict | BaseException, environ: str) -> None:
    assert isinstance(seen, dict), seen
    assert seen["environ"] != environ
    if os.getpid() not in seen["visible"]:  # (a pid of its own namespace could match by chance)
        assert seen["environ"] == "FileNotFoundError", seen["environ"]


@namespaces
def test_a_worker_cannot_read_its_callers_environ(
    caller_environ: str, tmp_path: Path, report: Report
) -> None:
    first = _call(os.getpid())
    _out_of_reach(first, caller_environ)
    assert isinstance(first, dict) and max(first["visible"]) < 100  # its namespace's pids only
    nested = _call(os.getpid(), "nested")
    assert isinstance(nested, dict) and nested["nested"] == 42
    crashes = []
    for action, sig in (("kill-self", signal.SIGKILL), ("segfault", signal.SIGSEGV)):
        crash = _call(os.getpid(), action)
        assert isinstance(crash, WorkerCrashedError), crash
        assert crash.signal == sig, crash
        crashes.append(crash)
    ticks = tmp_path / "ticks"

    async def cancelled() -> None:
        task = asyncio.ensure_future(peek(os.getpid(), "busy", str(ticks)))
        while not ticks.exists():
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    deadline = time.monotonic() + 15
    stopped = False
    while not stopped and time.monotonic() < deadline:
        before = ticks.read_text()
        time.sleep(0.5)
        stopped = ticks.read_text() == before
    assert stopped, "the cancelled call's worker was killed"
    later = [_call(os.getpid()) for _ in range(2)]
    for seen in later:
        _out_of_reach(seen, caller_environ)
    # Workers after the first are forked from the endpoint's template, in its namespace: pid 1
    # is the init, 2 the template, the workers come after.
    forked = [s for s in later if isinstance(s, dict) and s["pid"] > 2]
    assert forked, later
    report(
        "security",
        "a worker (in the namespace mode) reading its caller's `/proc/<caller pid>/environ`",
        "FileNotFoundError: the worker has a PID namespace of its own and sees only its "
        f"namespace's {len(first['visible'])} processes; nested calls ran, a SIGKILL and a "
        "segfault in the function were told as WorkerCrashedError naming the signal, a "
        "cancelled busy call's worker was killed, and workers forked from the template (in its "
        "namespace) were as isolated",
    )


def test_the_relocated_mode_has_no_pid_isolation_and_says_so(
    caller_environ: str, monkeypatch: pytest.MonkeyPatch, report: Report
) -> None:
    monkeypatch.setenv("FLASH_NAMESPACES", "off")
    process.shutdown()
    seen = _call(os.getpid())
    assert isinstance(seen, dict), seen
    assert seen["environ"] == caller_environ  # what the namespace mode prevents
    assert NO_PID_ISOLATION in layer_mode(enabled=False).described
    report(
        "security",
        "the same read in the relocated mode (`FLASH_NAMESPACES=off`)",
        "the caller's variables were read: no PID isolation, as `flash check` and "
        '`flash env ls` say ("workers have no PID isolation")',
    )
