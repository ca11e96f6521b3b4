"""Nested calls on the side that owns the pools (runtime/nested_calls.py)."""

from __future__ import annotations

import asyncio
import pickle
from types import SimpleNamespace
from typing import Any

import pytest

from openflash.runtime import nested_calls
from openflash.runtime.nested_calls import NestedCalls
from openflash.workers import events, protocol
from openflash.workers.calls import Call, Reply


class _Runtime:
    """Submits nothing: notes the hooks a pool would read at submit (Pool.submit)."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    async def _submit(self, endpoint: object, call: Call) -> Reply:
        self.seen = {
            "taken": events.call_taken.get(),
            "handed_back": events.call_handed_back.get(),
        }
        return Reply(True, pickle.dumps("done"))


def test_a_nested_call_does_not_carry_the_hooks_of_the_job_that_started_its_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker's reader task (and so each nested call it relays) runs in the context of the
    submit that started the worker: a /run job's, with its call_taken and call_handed_back
    hooks. A nested call that a reload hands back (its endpoint's pool replaced while the call
    waited there) would otherwise tell that job its own call was handed back untaken, and the
    job runner would run the job again from the start once its function returned, although it
    was taken and ran (server/jobs.py)."""
    monkeypatch.setattr(
        nested_calls, "lookup", lambda file, qualname: SimpleNamespace(endpoint=None)
    )
    monkeypatch.setattr(
        nested_calls,
        "_call",
        lambda handle, request: Call(protocol.OP_FUNCTION, "t", None, b"", label="inner()"),
    )
    runtime = _Runtime()
    told: list[str] = []
    request = protocol.NestedRequest("f.py", "inner", 0, protocol.OP_FUNCTION, b"")

    async def main() -> tuple[Any, Any, Any]:
        events.call_taken.set(lambda: told.append("taken"))
        events.call_handed_back.set(lambda: told.append("handed back"))
        handler = NestedCalls(runtime)  # type: ignore[arg-type]
        reply = await handler.call(None, request)
        # the caller's own hooks are left as they were
        return reply, events.call_taken.get(), events.call_handed_back.get()

    reply, taken, handed_back = asyncio.run(main())
    assert reply.ok
    assert runtime.seen == {"taken": None, "handed_back": None}
    assert taken is not None and handed_back is not None
    assert told == []
