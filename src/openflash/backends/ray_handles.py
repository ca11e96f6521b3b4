"""A worker that is a Ray actor, as the pool sees it: byte streams made of actor calls.

The pool writes frames (protocol.py); ``RayWorkerHandle`` turns each CALL into an actor call and
feeds its reply back as a frame, and a dead actor into the end of the stream. backends/ray.py
starts the actors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import ray

from openflash.workers import protocol

__all__ = ["RayWorkerHandle", "cause"]


def cause(error: BaseException) -> str:
    """The text of what went wrong on a node, without Ray's wrapping."""
    cause = getattr(error, "cause", None)
    return str(cause) if cause is not None else str(error)


class _FrameWriter:
    """The pool's writer: frames written to it become actor calls."""

    def __init__(self, handle: RayWorkerHandle) -> None:
        self.handle = handle
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= protocol.HEADER.size:
            kind, call_id, size = protocol.HEADER.unpack_from(self.buffer)
            end = protocol.HEADER.size + size
            if len(self.buffer) < end:
                return
            payload = bytes(self.buffer[protocol.HEADER.size : end])
            del self.buffer[:end]
            self.handle.frame(kind, call_id, payload)

    def close(self) -> None:
        return None


class RayWorkerHandle:
    """A worker that is a Ray actor, seen through the pool's byte streams."""

    def __init__(
        self,
        actor: Any,  # a Ray ActorHandle (Ray ships no types)
        node: str,
        on_exit: Callable[[RayWorkerHandle], None] | None = None,
    ) -> None:
        self.actor = actor
        self.node = node
        self.pid = 0
        self.gpus: tuple[str, ...] = ()
        self.reader = asyncio.StreamReader()
        self.writer = _FrameWriter(self)
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._why = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_exit = on_exit
        self.expected_exit = False

    async def start(self) -> None:
        """Wait for the actor, then tell the pool it is ready (a READY frame)."""
        try:
            info = await self.actor.ready.remote()
        except ray.exceptions.RayError as e:
            self._end(f"the Ray actor could not start on node {self.node}: {cause(e)}", 1)
            return
        self.pid = int(info["pid"])
        self.gpus = tuple(g for g in str(info["gpus"]).split(",") if g)
        self.reader.feed_data(protocol.encode(protocol.READY, 0, protocol.dumps(info)))

    def frame(self, kind: int, call_id: int, payload: bytes) -> None:
        if self._ended.done():
            return
        if kind == protocol.CALL:
            task = asyncio.ensure_future(self._call(call_id, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == protocol.RELEASE:
            self.actor.release.remote(payload.decode())
        elif kind == protocol.CALLER:
            self.actor.caller.remote(payload)
        elif kind == protocol.SHUTDOWN:
            self.kill()

    async def _call(self, call_id: int, payload: bytes) -> None:
        try:
            reply = await self.actor.call.remote(call_id, payload)
        except ray.exceptions.RayError as e:
            self._end(f"the Ray actor on node {self.node} died: {cause(e)}", -9)
            return
        if not self._ended.done():
            self.reader.feed_data(reply)

    def kill(self) -> None:
        if self._ended.done():
            return
        if ray.is_initialized():  # after ray.shutdown, ray.kill would start a new local Ray
            with contextlib.suppress(ray.exceptions.RayError, ValueError):
                ray.kill(self.actor, no_restart=True)
        self._end(f"stopped (its actor on node {self.node} was killed)", -9)

    def _end(self, why: str, code: int) -> None:
        if self._ended.done():
            return
        self._why = why
        self._ended.set_result(code)
        self.reader.feed_eof()
        if self._on_exit is not None:
            self._on_exit(self)

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)

    def stderr_tail(self) -> str:
        return self._why
