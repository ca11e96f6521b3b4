"""What a worker sends while a call runs: a generator's items (ITEM) and progress (PROGRESS).

A call whose function returns a generator (sync or async) streams: each item goes back as an
ITEM frame as soon as it is yielded, pickled as a result is (portable forms for the caller), and
the final RESULT (``None``) ends the stream. Backpressure: a worker sends at most ``WINDOW`` items
ahead of those the caller took; the caller sends CREDIT for each item it takes. CANCEL (the
caller broke out of its loop, or gave up) cancels the call's task: an async generator gets the
CancelledError at its ``await``, a sync generator is closed (GeneratorExit at its ``yield``) once
the ``next()`` running in its thread returns, so ``finally`` blocks run in both.

``progress(value)`` (``openflash.progress``) sends a PROGRESS frame for the call the code runs
for, from the worker's loop or any thread; outside a worker it does nothing. Like Runpod's
``runpod.serverless.progress_update(job, value)``, the latest value shows in ``/status/{id}``.

This module is part of the worker runtime: it imports the standard library only.
"""

from __future__ import annotations

import asyncio
import collections.abc
import concurrent.futures
import contextvars
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from openflash.workers import protocol
from openflash.workers.channel import current_call

__all__ = ["progress", "progress_update"]

#: Items a worker may send ahead of the caller (each one a frame in a buffer on the way).
WINDOW = 8

Send = Callable[[bytes], Coroutine[Any, Any, None]]
_DONE = object()


class _Outlet:
    """Where progress goes: the worker's send on its loop (set by child.serve)."""

    send: Send | None = None
    loop: asyncio.AbstractEventLoop | None = None
    dump: Callable[[Any], bytes] | None = None


_outlet = _Outlet()


def open_outlet(send: Send, loop: asyncio.AbstractEventLoop, dump: Callable[[Any], bytes]) -> None:
    _outlet.send, _outlet.loop, _outlet.dump = send, loop, dump


def progress(value: Any) -> None:
    """Report ``value`` (any picklable value: a number, a dict, text) as the running call's
    progress. The caller sees the latest one: ``/status/{id}``'s ``progress`` under ``flash
    run``, a stream's ``.progress`` in Python. Does nothing outside a call on a worker."""
    call_id = current_call.get()
    send, loop, dump = _outlet.send, _outlet.loop, _outlet.dump
    if not call_id or send is None or loop is None or dump is None or loop.is_closed():
        return
    frame = protocol.encode(protocol.PROGRESS, call_id, dump(value))
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(send(frame))
    else:
        asyncio.run_coroutine_threadsafe(send(frame), loop)


def progress_update(job: Any, value: Any) -> None:
    """Runpod's ``runpod.serverless.progress_update(job, progress)``: ``job`` is ignored."""
    progress(value)


def is_stream(value: Any) -> bool:
    return inspect.isgenerator(value) or isinstance(
        value, (collections.abc.Iterator, collections.abc.AsyncIterator)
    )


class Credits:
    """The items each streaming call may still send, by call id (CREDIT frames add one)."""

    def __init__(self) -> None:
        self.windows: dict[int, asyncio.Semaphore] = {}

    def open(self, call_id: int) -> asyncio.Semaphore:
        window = self.windows[call_id] = asyncio.Semaphore(WINDOW)
        return window

    def close(self, call_id: int) -> None:
        self.windows.pop(call_id, None)

    def grant(self, call_id: int) -> None:
        window = self.windows.get(call_id)
        if window is not None:
            window.release()


async def serve(owner: Any, call_id: int, gen: Any, wanted: bool) -> None:
    """Stream ``gen`` for the call ``call_id`` of ``owner`` (child.Executor: its ``send``,
    ``credits``, ``dump_result`` and thread pool); a transport without ``send`` cannot.

    ``wanted``: the caller streams (it decided at decoration). A caller that does not gets a
    TypeError for a generator; one that does gets the items of an iterable result."""
    if not wanted:
        _close(gen)
        raise TypeError(
            f"the function returned a {type(gen).__name__}, but is not a generator function, "
            "so its caller does not stream. Hint: `yield` the items in the function itself, or "
            "annotate its return type as Iterator[...] or AsyncIterator[...]"
        )
    if not is_stream(gen):
        if isinstance(gen, (str, bytes, dict)) or not hasattr(gen, "__iter__"):
            raise TypeError(
                f"the function streams (its return annotation says so), but it returned a "
                f"{type(gen).__name__}. Hint: yield the items, or return an iterable of them"
            )
        gen = iter(gen)
    if owner.send is None:
        await _aclose(gen) if hasattr(gen, "__anext__") else _close(gen)
        raise TypeError(
            "the function is a generator, and this worker has no frame channel to stream its "
            "items on (it was not started by a pool): return a list, or run it from a pool"
        )
    window = owner.credits.open(call_id)
    try:
        await stream(gen, call_id, owner.send, owner.dump_result, window, owner.executor)
    finally:
        owner.credits.close(call_id)


async def stream(
    gen: Any,
    call_id: int,
    send: Send,
    dump: Callable[[Any], bytes],
    window: asyncio.Semaphore,
    threads: concurrent.futures.Executor,
) -> None:
    """Send each item of ``gen`` as an ITEM frame, within the credit ``window``."""

    async def put(item: Any) -> None:
        await window.acquire()
        await send(protocol.encode(protocol.ITEM, call_id, dump(item)))

    if hasattr(gen, "__anext__"):
        try:
            async for item in gen:
                await put(item)
        finally:
            await _aclose(gen)
        return
    running: concurrent.futures.Future[Any] | None = None
    try:
        while True:
            context = contextvars.copy_context()
            running = threads.submit(context.run, _next, gen)
            item = await asyncio.wrap_future(running)
            running = None
            if item is _DONE:
                return
            await put(item)
    finally:
        # Closing a generator whose next() still runs in its thread fails: wait for it there.
        closing = threads.submit(_close_after, running, gen)
        await asyncio.shield(asyncio.wrap_future(closing))


def _next(gen: Any) -> Any:
    try:
        return next(gen)
    except StopIteration:
        return _DONE


def _close_after(running: concurrent.futures.Future[Any] | None, gen: Any) -> None:
    if running is not None:
        concurrent.futures.wait([running])
    _close(gen)


def _close(gen: Any) -> None:
    close = getattr(gen, "close", None)
    if callable(close):
        close()


async def _aclose(gen: Any) -> None:
    aclose = getattr(gen, "aclose", None)
    if callable(aclose):
        await aclose()
