"""Workers that die, crash, run out of memory, hang or drop their pipe: every caller gets a clear
error quickly, the pool replaces the worker, and the next call works in a fresh process."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from openflash import (
    CpuLiveServerless,
    ExecutionTimeoutError,
    WorkerCrashedError,
    remote,
)
from openflash.runtime import process

Report = Callable[[str, str, str], None]

#: What "no caller hangs" means here: an answer well within this. It bounds a hang, it is not a
#: speed target; the measured times go to docs/reliability.md.
HANG_LIMIT_S = 15.0


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone for our purposes (its parent reaps it): check its state.
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)
    return False


@remote(CpuLiveServerless(name="faults", executionTimeoutMs=800))
def misbehave(kind: str, arg: str = "") -> int:
    import ctypes
    import os
    import signal
    import socket
    import sys
    import time

    if kind == "pid-then-sleep":
        with open(arg, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(30)
    elif kind == "segfault":
        ctypes.string_at(0)
    elif kind == "allocate":
        block = bytearray(int(arg))
        block[:: 1 << 12] = b"x" * len(block[:: 1 << 12])  # touch every page
        return len(block)
    elif kind == "hang":
        while True:  # a busy thread that ignores everything, not an await
            time.sleep(0.01)
    elif kind == "drop-pipe":
        sock = socket.socket(fileno=int(sys.argv[1]))
        sock.shutdown(socket.SHUT_RDWR)
        time.sleep(30)
    elif kind == "kill-self":
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def _timed(kind: str, arg: str = "") -> tuple[BaseException | int, float]:
    started = time.monotonic()
    try:
        result: BaseException | int = asyncio.run(misbehave(kind, arg))
    except BaseException as e:  # the error is the result under test
        result = e
    return result, time.monotonic() - started


@pytest.mark.usefixtures("flash_home")
def test_a_worker_killed_mid_call(tmp_path: Path, report: Report) -> None:
    before = asyncio.run(misbehave("ok"))
    pid_file = tmp_path / "pid"

    async def main() -> float:
        task = asyncio.ensure_future(misbehave("pid-then-sleep", str(pid_file)))
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.01)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(WorkerCrashedError) as crash:
            await task
        assert crash.value.signal == signal.SIGKILL
        assert "SIGKILL" in str(crash.value)
        return time.monotonic() - killed

    took = asyncio.run(main())
    assert took < HANG_LIMIT_S
    after, _ = _timed("ok")
    assert isinstance(after, int) and after not in (before, int(pid_file.read_text()))
    report(
        "workers",
        "SIGKILL to a worker in the middle of a call",
        f"the caller got WorkerCrashedError (signal 9) {took * 1000:.0f} ms after the kill; "
        "the next call ran in a new worker",
    )


@pytest.mark.usefixtures("flash_home")
def test_a_worker_that_segfaults(report: Report) -> None:
    crash, took = _timed("segfault")
    assert isinstance(crash, WorkerCrashedError), crash
    assert crash.signal == signal.SIGSEGV and "SIGSEGV" in str(crash)
    assert took < HANG_LIMIT_S
    after, _ = _timed("ok")
    assert isinstance(after, int)
    report(
        "workers",
        "a segfault in the function (`ctypes.string_at(0)`)",
        f"WorkerCrashedError naming SIGSEGV after {took * 1000:.0f} ms (start included); "
        "the next call ran in a new worker",
    )


@pytest.mark.usefixtures("flash_home")
def test_a_worker_over_its_memory_cap(monkeypatch: pytest.MonkeyPatch, report: Report) -> None:
    monkeypatch.setenv("FLASH_WORKER_MAX_RSS", "256M")
    process.shutdown()  # the next call starts a runtime that reads the cap
    first, _ = _timed("ok")
    assert isinstance(first, int)
    small, _ = _timed("allocate", str(32 << 20))
    assert small == 32 << 20  # under the cap: fine
    over, took = _timed("allocate", str(1 << 30))
    assert isinstance(over, MemoryError), over
    assert "FLASH_WORKER_MAX_RSS=268435456 bytes (256 MiB)" in str(over)
    assert took < HANG_LIMIT_S
    after, _ = _timed("ok")
    assert isinstance(after, int) and after != first, "the worker was replaced"
    assert _wait_gone(first)
    report(
        "workers",
        "a call allocating 1 GiB under `FLASH_WORKER_MAX_RSS=256M`",
        f"MemoryError naming the cap after {took * 1000:.0f} ms; the worker exited and the "
        "next call ran in a new one (a 32 MiB call under the cap ran normally)",
    )


@pytest.mark.usefixtures("flash_home")
def test_a_worker_hung_past_its_timeout(report: Report) -> None:
    first, _ = _timed("ok")
    assert isinstance(first, int)
    hung, took = _timed("hang")
    assert isinstance(hung, ExecutionTimeoutError), hung
    assert "executionTimeoutMs=800" in str(hung)
    assert took < HANG_LIMIT_S
    assert _wait_gone(first), "the hung worker was killed"
    after, _ = _timed("ok")
    assert isinstance(after, int) and after != first
    report(
        "workers",
        "a function spinning forever past `executionTimeoutMs=800`",
        f"ExecutionTimeoutError after {took * 1000:.0f} ms; the worker was killed and replaced",
    )


@pytest.mark.usefixtures("flash_home")
def test_a_worker_that_closes_its_pipe_without_exiting(report: Report) -> None:
    first, _ = _timed("ok")
    assert isinstance(first, int)
    dropped, took = _timed("drop-pipe")
    assert isinstance(dropped, WorkerCrashedError), dropped
    assert took < HANG_LIMIT_S
    assert _wait_gone(first), "the silent worker was killed, not left running"
    after, _ = _timed("ok")
    assert isinstance(after, int) and after != first
    report(
        "workers",
        "a worker shutting its socket down mid-call and sleeping on",
        f"WorkerCrashedError after {took * 1000:.0f} ms; the process was killed (none "
        "left behind) and replaced",
    )
