"""A worker on a Ray node, as the pool sees it: byte streams carried by actor calls.

The pool writes frames (protocol.py) to ``writer``: they go down to the node's actor with
``send``, in order, batched while one is on its way. A task long-polls the actor's ``receive``
and feeds what the worker wrote into ``reader``. The worker's exit, or the actor's death (killed,
out of memory, its node lost, or an actor that could not start), ends the stream with the cause,
naming the node, which the pool reports as a WorkerCrashedError. backends/ray.py starts the
actors; backends/ray_worker.py is the actor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import ray

__all__ = ["RayWorkerHandle", "cause"]


def cause(error: BaseException) -> str:
    """The text of what went wrong on a node, without Ray's wrapping."""
    cause = getattr(error, "cause", None)
    if cause is None:
        return str(error)
    return str(cause) or repr(cause)  # an empty AssertionError() still says what it is


class _FrameWriter:
    """The pool's writer: bytes written to it go to the actor, in order."""

    def __init__(self, handle: RayWorkerHandle) -> None:
        self.handle = handle
        self.buffer = bytearray()
        self.sending: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> None:
        if self.handle.ended:
            return
        self.buffer += data
        if self.sending is None:
            self.sending = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        try:
            while self.buffer and not self.handle.ended:
                data, self.buffer = bytes(self.buffer), bytearray()
                await self.handle.actor.send.remote(data)
        except ray.exceptions.RayError as e:
            self.handle.end(f"the Ray actor on node {self.handle.node} died: {cause(e)}", -9)
        finally:
            self.sending = None

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None


class RayWorkerHandle:
    """A worker process on a Ray node, driven by its actor, seen through the pool's streams."""

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
        #: How its node started the worker: forked from the node's template, or spawned (why).
        self.started: str | None = None
        self.reader = asyncio.StreamReader()
        self.writer = _FrameWriter(self)
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._why = ""
        self._on_exit = on_exit
        self.expected_exit = False
        self._pulling: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        return self._ended.done()

    def start(self) -> None:
        """Start the worker on its node and carry its output (the pool waits for READY, within
        its start-up bound)."""
        self._pulling = asyncio.ensure_future(self._pull())

    async def _pull(self) -> None:
        try:
            info = await self.actor.start.remote()
        except ray.exceptions.RayError as e:
            self.end(f"the Ray actor could not start on node {self.node}: {cause(e)}", 1)
            return
        self.pid = int(info["pid"])
        self.node = str(info.get("ip") or self.node)
        self.gpus = tuple(g for g in str(info["gpus"]).split(",") if g)
        self.started = str(info.get("started") or "") or None
        while not self.ended:
            try:
                data, code, tail = await self.actor.receive.remote()
            except ray.exceptions.RayError as e:
                self.end(f"the Ray actor on node {self.node} died: {cause(e)}", -9)
                return
            if data:
                self.reader.feed_data(data)
                continue
            self.end(tail, code if code is not None else 1)
            self._kill_actor()

    def kill(self) -> None:
        if self.ended:
            return
        self._kill_actor()
        self.end(f"stopped (its actor on node {self.node} was killed)", -9)

    def _kill_actor(self) -> None:
        if ray.is_initialized():  # after ray.shutdown, ray.kill would start a new local Ray
            with contextlib.suppress(ray.exceptions.RayError, ValueError):
                ray.kill(self.actor, no_restart=True)

    def end(self, why: str, code: int) -> None:
        if self.ended:
            return
        self._why = why
        self._ended.set_result(code)
        self.reader.feed_eof()
        # At exit (atexit, no loop running) the pulling task goes with its loop.
        with contextlib.suppress(RuntimeError):
            if self._pulling is not None and self._pulling is not asyncio.current_task():
                self._pulling.cancel()
        if self._on_exit is not None:
            self._on_exit(self)

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)

    def stderr_tail(self) -> str:
        return self._why
