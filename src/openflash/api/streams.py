"""Generator functions called from Python: an async iterator of their items, as they come.

A decorated function (or method) streams when its body makes it a generator (``yield`` in a
``def`` or an ``async def``) or its return annotation says so (``Iterator``, ``Generator``,
``AsyncIterator``, ``AsyncGenerator``, ``Iterable``, ``AsyncIterable``); this is decided at
decoration, never after a worker round trip. Calling it returns a ``Stream``: ``async for item
in fn(...)`` gets each item as the worker yields it (Modal's ``remote_gen``, Runpod's generator
handlers). The worker runs at most ``streaming.WINDOW`` items ahead of the loop (backpressure);
leaving the loop early (``break``, an exception, ``aclose()``, the stream being dropped) stops the
generator in the worker; an exception raised mid-stream is raised after the items before it; the
endpoint's execution timeout applies to the whole stream. ``stream.progress`` is the latest value
the function passed to ``openflash.progress``, and ``on_progress`` (settable) is called with each.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import contextvars
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from openflash.api import values
from openflash.runtime import process
from openflash.workers import protocol
from openflash.workers.calls import Call

__all__ = ["Stream", "progress_sink", "streams", "watched"]

#: Where the progress of plain (not streaming) calls made in this context goes, if anywhere
#: (``flash run`` sets it for a ``/run`` job); it is called on the runtime's loop.
progress_sink: contextvars.ContextVar[Callable[[Any], None] | None] = contextvars.ContextVar(
    "openflash_progress_sink", default=None
)

_STREAM_TYPES = frozenset(
    {
        collections.abc.Iterator,
        collections.abc.Generator,
        collections.abc.Iterable,
        collections.abc.AsyncIterator,
        collections.abc.AsyncGenerator,
        collections.abc.AsyncIterable,
    }
)
_END = object()


def streams(fn: Any) -> bool:
    """Whether calling ``fn`` should stream: a generator function, or annotated to return one."""
    fn = inspect.unwrap(fn)
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    annotation = inspect.signature(fn).return_annotation if callable(fn) else None
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(fn).get("return", annotation)
        except Exception:  # it names a type only the worker can import
            return annotation.split("[")[0].rpartition(".")[2] in {
                t.__name__ for t in _STREAM_TYPES
            }
    return (typing.get_origin(annotation) or annotation) in _STREAM_TYPES


def watched(
    endpoint: str, first: Callable[[], Call], again: Callable[[], Call]
) -> tuple[Call, Callable[[], Call]]:
    """The call ``first()`` makes and ``again``, their calls passing progress to this context's
    ``progress_sink`` (if any)."""
    make = _watched(endpoint, again)
    return (_watched(endpoint, first)() if make is not again else first()), make


def _watched(endpoint: str, make: Callable[[], Call]) -> Callable[[], Call]:
    sink = progress_sink.get()
    if sink is None:
        return make

    def make_watched() -> Call:
        call = make()

        def on_frame(frame: protocol.Frame) -> None:
            if frame.kind == protocol.PROGRESS and sink is not None:
                with contextlib.suppress(Exception):  # a value this side cannot load
                    sink(values.load_result(endpoint, call.label, frame.payload))

        call.on_frame = on_frame
        return call

    return make_watched


class Stream:
    """The items of one call of a generator function, as an async iterator.

    ``async for item in stream`` yields each item (in the caller's portable forms, as results
    are); ``await stream.aclose()`` or ``async with stream:`` stop it early. Errors: the
    function's exception as a RemoteError after the items before it; ExecutionTimeoutError when
    the whole stream runs past the endpoint's ``executionTimeoutMs``; FlashError for the rest.
    """

    def __init__(
        self,
        endpoint: str,
        first: Callable[[], Call],
        again: Callable[[], Call],
        run: Callable[[Call, Callable[[], Call]], Awaitable[Any]],
    ) -> None:
        self.endpoint = endpoint
        self._first: Call | None = first()
        self.label = self._first.label
        #: The latest value the function reported with ``openflash.progress`` (None: none yet).
        self.progress: Any = None
        #: Called with each progress value, on the caller's loop.
        self.on_progress: Callable[[Any], None] | None = None
        self._again = again
        self._run = run
        self._sent: list[Call] = []  # the call sent last (a list the call's task shares)
        self._frames: asyncio.Queue[Any] | None = None
        self._task: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished = False

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        if self._finished:
            raise StopAsyncIteration
        frames = self._start()
        while True:
            frame = await frames.get()
            if frame is _END:
                self._finished = True
                assert self._task is not None
                self._task.result()  # the call's error, if it failed
                raise StopAsyncIteration
            value = values.load_result(self.endpoint, self.label, frame.payload)
            if frame.kind == protocol.PROGRESS:
                self.progress = value
                if self.on_progress is not None:
                    self.on_progress(value)
                continue
            self._signal(protocol.CREDIT)
            return value

    async def aclose(self) -> None:
        """Stop the stream: the worker's generator is closed (its ``finally`` blocks run)."""
        self._stop()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __await__(self) -> Any:
        raise TypeError(
            f"{self.label} is a generator function: its call streams, it cannot be awaited. "
            f"Hint: iterate it with `async for item in {self.label.rstrip('()')}(...)`, or "
            "collect it with `[item async for item in ...]`"
        )

    def __del__(self) -> None:
        self._stop()

    def __repr__(self) -> str:
        return f"<stream of {self.label} on endpoint {self.endpoint!r}>"

    def _start(self) -> asyncio.Queue[Any]:
        if self._frames is not None:
            return self._frames
        loop = self._loop = asyncio.get_running_loop()
        frames: asyncio.Queue[Any] = asyncio.Queue()
        self._frames = frames

        # Nothing the call's task holds refers to this stream, so that dropping it stops it.
        first, again, sent = self._first, self._again, self._sent
        self._first = None

        def fresh() -> Call:
            nonlocal first
            call, first = first or again(), None
            sent[:] = [call]
            call.stream = True
            call.on_frame = lambda frame: _forward(loop, frames, frame)
            return call

        self._task = asyncio.ensure_future(self._run(fresh(), fresh))
        self._task.add_done_callback(lambda _: frames.put_nowait(_END))
        return frames

    def _signal(self, kind: int) -> None:
        runtime = process._runtime
        if not self._sent or runtime is None:
            return
        with contextlib.suppress(RuntimeError):  # the runtime has stopped: nothing to signal
            runtime.loop.call_soon_threadsafe(self._sent[-1].signal, kind)

    def _stop(self) -> None:
        if self._finished or self._task is None:
            return
        self._finished = True
        self._signal(protocol.CANCEL)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)


def _forward(loop: asyncio.AbstractEventLoop, frames: asyncio.Queue[Any], frame: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody to tell
        loop.call_soon_threadsafe(frames.put_nowait, frame)
