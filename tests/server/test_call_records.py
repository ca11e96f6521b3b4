"""server/call_records.py: a call's error in its parts, and what its worker printed."""

from __future__ import annotations

import asyncio

from openflash.errors import RemoteError
from openflash.server.call_records import (
    SHOWN_BYTES,
    CallRecords,
    Later,
    WorkerOutput,
    shown,
    split_error,
    user_frames_first,
)

TRACEBACK = """Traceback (most recent call last):
  File "/opt/venv/lib/python3.11/site-packages/openflash/workers/child.py", line 120, in run
    result = fn(*args)
  File "/home/me/shop/app.py", line 17, in explode
    check(text)
  File "/usr/lib/python3/dist-packages/cloudpickle/cloudpickle.py", line 5, in wrapper
    return f()
  File "/home/me/shop/app.py", line 9, in check
    raise ValueError("no vowels")
ValueError: no vowels"""


def test_an_error_splits_into_message_traceback_with_the_users_frames_and_hint() -> None:
    error = RemoteError(
        "ValueError: no vowels\n(raised by explode() on endpoint 'shop')",
        exc_type="ValueError",
        remote_traceback=TRACEBACK,
    )
    parts = split_error(str(error))
    assert parts is not None
    assert parts["message"] == "ValueError: no vowels"
    assert parts["more"] == "(raised by explode() on endpoint 'shop')"
    assert parts["hint"] == RemoteError.hint
    assert parts["traceback"].splitlines() == [
        "Traceback (most recent call last):",
        '  File "/home/me/shop/app.py", line 17, in explode',
        "    check(text)",
        '  File "/home/me/shop/app.py", line 9, in check',
        '    raise ValueError("no vowels")',
        "ValueError: no vowels",
    ]
    own = parts["openflash_frames"].splitlines()
    assert [line for line in own if line.startswith("  File")] == [
        '  File "/opt/venv/lib/python3.11/site-packages/openflash/workers/child.py", line 120, in run',
        '  File "/usr/lib/python3/dist-packages/cloudpickle/cloudpickle.py", line 5, in wrapper',
    ]
    assert split_error(None) is None
    plain = split_error("the worker exited with signal 9\nHint: raise FLASH_WORKER_MAX_RSS")
    assert plain == {
        "message": "the worker exited with signal 9",
        "more": "",
        "traceback": "",
        "openflash_frames": "",
        "hint": "raise FLASH_WORKER_MAX_RSS",
    }


def test_a_large_value_is_cut_for_the_page_and_its_size_told() -> None:
    small = shown({"text": "hi"})
    assert small == {"json": '{\n  "text": "hi"\n}', "bytes": 18, "cut": False}
    big = shown(["x" * 1000] * 200)
    assert big["cut"] and big["bytes"] > SHOWN_BYTES and len(big["json"]) == SHOWN_BYTES


def test_a_calls_output_is_its_workers_lines_during_it() -> None:
    output = WorkerOutput(limit=10)
    output.add("shop", 11, "stdout", "before")
    output.add("shop", 11, "stdout", "mine")
    output.add("shop", 12, "stderr", "another worker's")
    lines = output.tail("shop")
    started = lines[1]["time"]
    during = output.during("shop", 11, started, started)
    assert [line["line"] for line in during] == ["mine"]
    assert [line["line"] for line in output.tail("shop", 2)] == ["mine", "another worker's"]
    assert output.tail("elsewhere") == []


def test_waiting_for_a_change_wakes_when_one_comes_from_another_thread() -> None:
    records = CallRecords(limit=2)

    async def main() -> int:
        version = records.version
        waiting = asyncio.ensure_future(records.changes(version, 60))
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, records.touch)
        return await waiting

    assert asyncio.run(main()) == 1
    for i in range(3):
        records.add({"id": f"c{i}", "status": "COMPLETED"})
    assert [c["id"] for c in records.newest_first()] == ["c2", "c1"]  # the last two kept
    records.update("c2", worker_pid=7, queue_wait=None)
    updated = records.get("c2") or {}
    assert updated["worker_pid"] == 7 and "queue_wait" not in updated  # None adds nothing


def test_an_import_failure_reads_from_the_users_file() -> None:
    text = """Traceback (most recent call last):
  File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
  File "<frozen importlib._bootstrap>", line 1204, in _gcd_import
  File "/home/me/shop/broken.py", line 1, in <module>
    import a_module_that_does_not_exist
ModuleNotFoundError: No module named 'a_module_that_does_not_exist'"""
    user, own = user_frames_first(text)
    assert user.splitlines()[1] == '  File "/home/me/shop/broken.py", line 1, in <module>'
    assert "importlib/__init__.py" in own and "<frozen importlib._bootstrap>" in own


def test_a_later_field_is_made_when_first_read_and_once() -> None:
    made: list[int] = []

    def make() -> dict[str, int]:
        made.append(1)
        return {"x": len(made)}

    def broken() -> object:
        raise ValueError("no JSON form")

    calls = CallRecords()
    calls.add({"id": "a", "status": "COMPLETED", "input": Later(make), "bad": Later(broken)})
    assert made == []  # recorded, not yet made
    first = calls.get("a")
    assert first is not None and first["input"] == {"x": 1}
    assert first["bad"] == "<cannot be shown: ValueError: no JSON form>"
    assert [c["input"] for c in calls.newest_first()] == [{"x": 1}]
    assert made == [1]  # made once, then kept
