"""SyncCalls keeps /runsync answers within a byte budget and a time, says why one is gone, and
drops them on a timer of the running loop (no other call needed)."""

from __future__ import annotations

import asyncio

import pytest

from openflash import _settings
from openflash.errors import ConfigError
from openflash.server.endpoint_health import SyncCalls


def _answer(n: int) -> dict[str, object]:
    return {"id": f"sync-{n}", "status": "COMPLETED", "output": n}


def test_the_oldest_go_first_past_the_budget_and_a_larger_one_is_not_kept() -> None:
    calls = SyncCalls(budget=100)
    for n in range(5):
        calls.keep("/r", _answer(n), 30)
    assert calls.kept_bytes == 90
    assert [calls.answer(f"sync-{n}", "/r") is not None for n in range(5)] == [
        False, False, True, True, True,
    ]  # fmt: skip
    assert "dropped to make room for newer /runsync answers" in (calls.gone("sync-0", "/r") or "")
    assert calls.gone("sync-0", "/other") is None  # another route's id is not this one's
    calls.keep("/r", _answer(9), 101)
    assert calls.answer("sync-9", "/r") is None and calls.kept_bytes == 90
    assert "(101 bytes of JSON) was too large to keep" in (calls.gone("sync-9", "/r") or "")
    assert calls.gone("never", "/r") is None


def test_answers_expire_on_a_timer_without_another_call() -> None:
    async def scenario() -> tuple[bool, int, str | None]:
        calls = SyncCalls(keep_s=0.05)
        calls.keep("/r", _answer(1), 10)
        kept = calls.answer("sync-1", "/r") is not None
        while calls.kept_bytes:  # only the timer can drop it: nothing else is called
            await asyncio.sleep(0.01)
        return kept, calls.kept_bytes, calls.gone("sync-1", "/r")

    kept, left, why = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert kept and left == 0
    assert why is not None and why.startswith("it expired")


def test_the_budget_is_read_from_flash_runsync_keep_bytes() -> None:
    assert _settings.runsync_keep_bytes({}) == 64 << 20
    assert _settings.runsync_keep_bytes({"FLASH_RUNSYNC_KEEP_BYTES": "8M"}) == 8 << 20
    assert _settings.runsync_keep_bytes({"FLASH_RUNSYNC_KEEP_BYTES": "0"}) == 0
    with pytest.raises(ConfigError, match="FLASH_RUNSYNC_KEEP_BYTES='lots' is not a size"):
        _settings.runsync_keep_bytes({"FLASH_RUNSYNC_KEEP_BYTES": "lots"})
    calls = SyncCalls(budget=0)  # none kept, and /status says why
    calls.keep("/r", _answer(1), 10)
    assert calls.answer("sync-1", "/r") is None
    assert "too large to keep" in (calls.gone("sync-1", "/r") or "")
