"""Calls made inside a worker to other endpoints, sent back to the parent that owns the pools.

The worker's main (child.py) opens the channel on its socket; the light client (client.py) sends
NESTED frames through it and waits for the parent's NESTED_REPLY. Calls may come from the worker's
event loop (``await other(...)`` in an async function) or from any thread with a loop of its own
(``asyncio.run(other(...))`` in a plain function): the frames always go out on the worker's loop.

This module is part of the worker runtime: it imports the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

from openflash.workers import portable, protocol

__all__ = ["Channel", "current_call", "get_channel", "open_channel"]

#: The id of the CALL the running code serves (the executor sets it for each call).
current_call: contextvars.ContextVar[int] = contextvars.ContextVar("openflash_call", default=0)


class Channel:
    """Nested calls of one worker: numbered requests, each waiting for its reply."""

    def __init__(
        self, send: Callable[[bytes], Coroutine[Any, Any, None]], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._send = send
        self.loop = loop
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[protocol.NestedReply]] = {}
        self._introduced = False  # whether a request has named this worker's modules
        #: Called before a request waits for its reply: the reading threads let another thread
        #: read if the running call kept the reading (call_threads.Reader.hand_off).
        self.before_wait: Callable[[], None] | None = None

    async def request(self, request: protocol.NestedRequest) -> protocol.NestedReply:
        """Send ``request`` to the parent and wait for its reply, from any thread's loop."""
        if self.before_wait is not None:
            self.before_wait()
        if asyncio.get_running_loop() is self.loop:
            return await self._request(request)
        future = asyncio.run_coroutine_threadsafe(self._request(request), self.loop)
        return await asyncio.wrap_future(future)

    async def _request(self, request: protocol.NestedRequest) -> protocol.NestedReply:
        nested_id = next(self._ids)
        if not self._introduced:  # once: the parent keeps them for this worker
            self._introduced = True
            request = request._replace(caller=tuple(sorted(portable.importable_modules())))
        future: asyncio.Future[protocol.NestedReply] = self.loop.create_future()
        self._pending[nested_id] = future
        try:
            await self._send(protocol.encode_nested(nested_id, request))
            return await future
        finally:
            self._pending.pop(nested_id, None)

    def resolve(self, nested_id: int, payload: bytes) -> None:
        """A NESTED_REPLY arrived (on the worker's loop)."""
        future = self._pending.get(nested_id)
        if future is not None and not future.done():
            future.set_result(protocol.decode_nested_reply(payload))

    def release(self, file: str, qualname: str, instance_id: str) -> None:
        """Drop an instance this worker made of a decorated class (from any thread)."""
        frame = protocol.encode(protocol.RELEASE, 0, protocol.dumps((file, qualname, instance_id)))
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: the worker is exiting
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._send(frame)))


_channel: Channel | None = None


def open_channel(send: Callable[[bytes], Coroutine[Any, Any, None]]) -> Channel:
    """Called once by the worker's main, on its event loop."""
    global _channel
    _channel = Channel(send, asyncio.get_running_loop())
    return _channel


def get_channel() -> Channel | None:
    return _channel
