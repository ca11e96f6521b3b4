"""Retries on real workers: failures, crashes, backoff (a lower bound), what is not retried."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from openflash import (
    ConfigError,
    CpuLiveServerless,
    Endpoint,
    RemoteError,
    Retries,
    WorkerCrashedError,
    remote,
)

pytestmark = pytest.mark.usefixtures("flash_home")


def run(coro):
    return asyncio.run(coro)


def _count(path: str) -> int:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        return len(f.read().splitlines())


@remote(CpuLiveServerless(name="retry-flaky"), retries=2)
def flaky(path: str) -> str:
    attempt = _count(path)
    if attempt <= 2:
        raise ValueError(f"attempt {attempt} fails")
    return f"ok at attempt {attempt}"


@remote(
    CpuLiveServerless(name="retry-flaky"),
    retries=Retries(max_retries=1, initial_delay=0.0, retry_on=(KeyError,)),
)
def wrong_kind(path: str) -> str:
    _count(path)
    raise ValueError("not a KeyError")


def test_a_function_that_fails_twice_then_succeeds_under_retries_2(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    started = time.monotonic()
    assert run(flaky(str(attempts))) == "ok at attempt 3"
    # retries=2: delays of 1 s then 2 s (a lower bound only)
    assert time.monotonic() - started >= 3.0
    assert len(attempts.read_text().splitlines()) == 3


def test_errors_not_named_in_retry_on_are_not_retried(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    with pytest.raises(ValueError, match="not a KeyError"):
        run(wrong_kind(str(attempts)))
    assert len(attempts.read_text().splitlines()) == 1


@Endpoint(
    name="retry-crash",
    workers=1,
    retries=Retries(max_retries=1, initial_delay=0.2, retry_on=("crash",)),
)
def crashes_once(path: str) -> int:
    if _count(path) == 1:
        os._exit(3)  # the worker dies
    return os.getpid()


def test_a_crashed_worker_call_is_retried_on_a_new_worker(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    pid = run(crashes_once(str(attempts)))
    first, second = (int(line) for line in attempts.read_text().splitlines())
    assert pid == second and first != second


@remote(CpuLiveServerless(name="retry-crash-none"), retries=Retries(1, retry_on=(ValueError,)))
def crashes(path: str) -> int:
    _count(path)
    os._exit(3)


def test_a_crash_not_in_retry_on_fails_at_once(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    with pytest.raises(WorkerCrashedError):
        run(crashes(str(attempts)))
    assert len(attempts.read_text().splitlines()) == 1


@remote(CpuLiveServerless(name="retry-slow"), retries=Retries(5, initial_delay=0.0))
async def slow_failure(path: str) -> None:
    _count(path)
    await asyncio.sleep(0.3)
    raise ValueError("fails")


def test_a_call_whose_caller_went_away_is_not_retried(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"

    async def main():
        task = asyncio.ensure_future(slow_failure(str(attempts)))
        while not attempts.exists():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.8)

    run(main())
    assert len(attempts.read_text().splitlines()) == 1


def test_retries_are_validated() -> None:
    with pytest.raises(ConfigError, match="retries='3' must be an int"):
        remote(retries="3")
    with pytest.raises(ConfigError, match="retry_on"):
        Retries(1, retry_on=("network",))
    with pytest.raises(TypeError, match="did you mean 'retries'"):
        remote(retry=2)
    assert isinstance(RemoteError("x"), Exception)
