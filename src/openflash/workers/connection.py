"""A worker's connection to its pool: frames in, calls started, replies out.

The worker's main (child.py) makes one ``Worker`` over its socket or its stdin and stdout. Over a
socket, threads read the frames and run plain functions' calls themselves (call_threads.py), and
every frame goes out through the ``Wire`` they share; over stdin and stdout (a worker in a
container), the event loop's streams read and write. Either way, the frames the loop handles go
to ``receive``: calls of async functions and methods become tasks, nested calls' replies resolve
their waiters, CANCEL cancels a call's task.

With its memory capped (FLASH_WORKER_MAX_RSS), a call that ran out of it is answered after a
RETIRE frame, and the worker exits.

This module is part of the worker runtime: it imports the standard library only.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from openflash.workers import call_threads, channel, pickling, protocol, streaming
from openflash.workers.learning import Learning

if TYPE_CHECKING:
    from openflash.workers.child import Executor

__all__ = ["Worker"]

_FLUSH_AT = 1 << 16


class Worker:
    """Serves an Executor over the socket a pool gave this process: through a ``Wire`` its
    reading threads share (call_threads.py), or the loop's streams (stdin and stdout)."""

    def __init__(
        self,
        writer: asyncio.StreamWriter | None,
        executor: Executor,
        wire: call_threads.Wire | None = None,
    ) -> None:
        self.writer = writer
        self.wire = wire
        self.executor = executor
        self.lock = asyncio.Lock()  # held while a frame is written in chunks, or drained
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.learning = Learning()  # what its first calls import (workers/learning.py)
        self.nested: channel.Channel | None = None
        self.loop = asyncio.get_running_loop()

    async def send(self, frame: bytes) -> None:
        await self.send_parts([frame])

    async def send_parts(self, parts: list[protocol.Buffer]) -> None:
        """Write a frame; a large one a chunk at a time, other frames waiting (``lock``)."""
        if self.wire is not None:
            await self.wire.send_parts(parts)
            return
        assert self.writer is not None
        if not self.lock.locked() and sum(memoryview(p).nbytes for p in parts) < _FLUSH_AT:
            protocol.write_parts(self.writer, parts)
            if self.writer.transport.get_write_buffer_size() <= _FLUSH_AT:
                return
            parts = []
        async with self.lock:
            await protocol.write_chunked(self.writer, parts, _FLUSH_AT)
            await self.writer.drain()

    def receive(self, frame: protocol.Frame) -> None:
        """A frame from the parent, on the loop (calls the reading threads did not run)."""
        if frame.kind == protocol.CALL:
            self.start(frame.call_id, self.handle(frame.call_id, frame.payload))
        elif frame.kind == protocol.NESTED_REPLY and self.nested is not None:
            self.nested.resolve(frame.call_id, frame.payload)
        elif frame.kind == protocol.RELEASE:
            self.executor.release(frame.payload.decode())
        elif frame.kind == protocol.CREDIT:
            self.executor.credits.grant(frame.call_id)
        elif frame.kind == protocol.CANCEL and frame.call_id in self.tasks:
            self.tasks[frame.call_id].cancel()
        elif frame.kind == protocol.CALLER:
            self.executor.caller_modules = pickling.accept_caller(frame.payload)

    def start(self, call_id: int, work: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(work)
        self.tasks[call_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(call_id, None))

    async def handle(self, call_id: int, payload: bytes) -> None:
        await self.answer(call_id, await self.executor.reply(call_id, payload))

    def claim(self, frame: protocol.Frame) -> Callable[[], None] | None:
        """How the reading thread runs this CALL itself, if it is a plain function's."""
        try:
            call = protocol.decode_call(frame.payload)
        except Exception:
            return None  # the loop answers it with the error
        fn = self.executor.plain(call)
        if fn is None:
            return None
        return lambda: contextvars.Context().run(self.run_here, frame.call_id, call, fn)

    def run_here(self, call_id: int, call: protocol.CallPayload, fn: Any) -> None:
        """Run a plain function's call in this thread and write its reply from it."""
        channel.current_call.set(call_id)  # nested calls name the call they are made for
        try:
            args, kwargs = pickling.load_arguments(call.args)
            result = fn(*args, **kwargs)
            if type(result) not in pickling.PLAIN_TYPES and (
                inspect.isawaitable(result) or streaming.is_stream(result)
            ):
                # An awaitable or a generator: the loop finishes it (a task CANCEL reaches).
                work = self.finish_later(call_id, call, result)
                self.loop.call_soon_threadsafe(self.start, call_id, work)
                return
            data = self.executor.pack_result(result, call.caller)
            reply = protocol.encode_packed(protocol.RESULT, call_id, data)
        except BaseException as e:  # everything goes back to the caller
            reply = self.executor.failed(call_id, e)
        reply = self.learning.with_imports(call_id, reply)
        assert self.wire is not None  # only the threads that read a Wire's socket run calls
        exhausted = self.executor.exhausted
        try:
            self.wire.write([protocol.encode(protocol.RETIRE), *reply] if exhausted else reply)
        except OSError as e:
            if not call_threads.socket_gone(e):
                raise  # the reply is lost: the reading thread ends the worker (Reader.fail)
            return  # the socket is gone: the worker is ending (its reader reads the end)
        if exhausted:
            _retire()

    async def finish_later(self, call_id: int, call: protocol.CallPayload, result: Any) -> None:
        channel.current_call.set(call_id)
        try:
            reply = await self.executor.finish(call_id, call, result)
        except BaseException as e:
            reply = self.executor.failed(call_id, e)
        await self.answer(call_id, reply)

    async def answer(self, call_id: int, reply: list[protocol.Buffer]) -> None:
        reply = self.learning.with_imports(call_id, reply)
        if not self.executor.exhausted:
            await self.send_parts(reply)
            return
        # Its memory may be fragmented or half-freed: say so before the reply (so that the pool
        # sends nothing more), then exit and let the pool start a fresh worker.
        parts = [protocol.encode(protocol.RETIRE), *reply]
        if self.wire is not None:
            await self.wire.drain()  # what the loop sent before, first
            self.wire.write(parts)
        else:
            assert self.writer is not None
            protocol.write_parts(self.writer, parts)
            await self.writer.drain()
        _retire()


def _retire() -> None:
    sys.stderr.write("openflash: the worker ran out of memory under its cap; exiting\n")
    sys.stderr.flush()
    os._exit(0)
