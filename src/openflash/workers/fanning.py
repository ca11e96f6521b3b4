"""Fan-out: one function over many inputs, a bounded number in flight, results as they finish.

After Modal's ``Function.map``/``starmap``/``spawn``/``spawn_map`` and Ray's ``ActorPool.map``.
``fan_out(start, inputs, window=...)`` is an async iterator: it takes inputs from ``inputs`` (any
iterable or async iterable, read lazily: a million-item generator runs in bounded memory) and
keeps at most ``window`` calls started and not yet handed out; results come out as their calls
finish, or in input order (``order_outputs``; a result waiting for an earlier one counts against
the window). A failure is raised at its position (the calls in flight are then cancelled), or
handed out as the exception (``return_exceptions``). Leaving the iterator early (``break``,
``aclose()``, an error) cancels the calls in flight, which stops them in their workers.

``Job`` is one call started now and awaited later (``spawn``). This module is shared by the
caller (api/fanout.py) and the light client in workers: it imports the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

__all__ = ["FanOut", "Job", "Method", "fan_out", "window_for"]

#: Calls kept in flight per slot (workersMax x max_concurrency): enough to keep every worker fed
#: while results travel back, few enough to bound memory.
SLOT_FACTOR = 4
#: Calls in flight at most where the endpoint's limits are unknown (the light client in workers).
LIGHT_WINDOW = SLOT_FACTOR * 8


def window_for(workers_max: int, max_concurrency: int) -> int:
    return max(1, workers_max) * max(1, max_concurrency) * SLOT_FACTOR


async def fan_out(
    start: Callable[[Any], Awaitable[Any]],
    inputs: Any,
    *,
    window: int,
    order_outputs: bool = True,
    return_exceptions: bool = False,
) -> AsyncIterator[Any]:
    """The results of ``start(item)`` for each item of ``inputs``, as described above."""
    items = _aiter(inputs)
    pending: dict[asyncio.Future[Any], int] = {}
    ready: dict[int, asyncio.Future[Any]] = {}  # finished, waiting for their turn (ordered)
    started = handed = 0
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) + len(ready) < window:
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                pending[asyncio.ensure_future(start(item))] = started
                started += 1
            if not order_outputs:
                if not pending:
                    return
                done, __ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    del pending[future]
                    yield _outcome(future, return_exceptions)
                continue
            if handed in ready:
                yield _outcome(ready.pop(handed), return_exceptions)
                handed += 1
                continue
            if not pending:
                return
            done, __ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                ready[pending.pop(future)] = future
    finally:
        for future in pending:
            future.cancel()
        if pending:  # let the cancellations reach the pools before leaving
            with contextlib.suppress(BaseException):
                await asyncio.wait(pending, timeout=5)
        for future in pending:
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warnings


def _outcome(future: asyncio.Future[Any], return_exceptions: bool) -> Any:
    error = future.exception()
    if error is None:
        return future.result()
    if return_exceptions:
        return error
    raise error


async def _aiter_sync(inputs: Any) -> AsyncIterator[Any]:
    for item in inputs:
        yield item


def _aiter(inputs: Any) -> AsyncIterator[Any]:
    if hasattr(inputs, "__aiter__"):
        return inputs.__aiter__()  # type: ignore[no-any-return]
    return _aiter_sync(inputs).__aiter__()


class Job:
    """One call started now, awaited later (Modal's ``spawn`` and ``FunctionCall``).

    ``await job`` or ``await job.result()`` gives its result (or raises its error);
    ``job.status`` is Runpod's name for its state (IN_PROGRESS, COMPLETED, FAILED, CANCELLED);
    ``job.cancel()`` stops it in its worker. Made on the caller's running event loop.
    """

    def __init__(self, call: Awaitable[Any], label: str = "") -> None:
        self.label = label
        self._task: asyncio.Future[Any] = asyncio.ensure_future(call)
        self._task.add_done_callback(_retrieve)

    @property
    def status(self) -> str:
        task = self._task
        if not task.done():
            return "IN_PROGRESS"
        if task.cancelled():
            return "CANCELLED"
        return "FAILED" if task.exception() is not None else "COMPLETED"

    def done(self) -> bool:
        return self._task.done()

    async def result(self, timeout: float | None = None) -> Any:
        """Its result; ``timeout`` (seconds) bounds the wait (TimeoutError), not the call."""
        return await asyncio.wait_for(asyncio.shield(self._task), timeout)

    def cancel(self) -> bool:
        """Cancel it: it stops in its worker and never reports a result. False if it ended."""
        return self._task.cancel()

    def __await__(self) -> Any:
        return asyncio.shield(self._task).__await__()

    def __repr__(self) -> str:
        return f"<job {self.label} {self.status}>"


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class FanOut:
    """``map``, ``starmap``, ``spawn`` and ``spawn_map`` for a callable handle (a remote
    function or method, here or in the light client) whose call returns an awaitable."""

    def _fan_window(self) -> int:
        """Calls in flight at most (the caller's handles say it from their endpoint's limits;
        the light client cannot know them)."""
        return LIGHT_WINDOW

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def map(
        self,
        *iterables: Any,
        order_outputs: bool = True,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """``async for result in f.map(xs)``: ``f(x)`` for each ``x``, several at a time.

        With several iterables, ``f(x, y)`` for each pair (as ``map`` does); ``kwargs`` go to
        every call. Results in input order unless ``order_outputs=False``; a failure raises at
        its position unless ``return_exceptions=True`` (then it is the item).
        """
        self._fan_check("map")
        inputs = iterables[0] if len(iterables) == 1 else zip(*iterables, strict=False)
        one = len(iterables) == 1
        return fan_out(
            lambda item: self(item, **kwargs) if one else self(*item, **kwargs),
            inputs,
            window=self._fan_window(),
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
        )

    def starmap(
        self,
        inputs: Any,
        *,
        order_outputs: bool = True,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """``async for result in f.starmap([(1, 2), (3, 4)])``: ``f(*args)`` for each tuple."""
        self._fan_check("starmap")
        return fan_out(
            lambda item: self(*item, **kwargs),
            inputs,
            window=self._fan_window(),
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
        )

    def spawn(self, *args: Any, **kwargs: Any) -> Job:
        """Start ``f(*args, **kwargs)`` now; a ``Job`` to await, check or cancel later."""
        self._fan_check("spawn")
        return Job(self(*args, **kwargs), _label(self))

    def spawn_map(self, *iterables: Any, **kwargs: Any) -> Job:
        """Start ``map`` in the background; a ``Job`` whose result is the list of results."""
        results = self.map(*iterables, **kwargs)
        return Job(_collect(results), _label(self))

    def _fan_check(self, name: str) -> None:
        if getattr(self, "_streams", False):
            raise TypeError(
                f"{_label(self)} is a generator function: {name}() runs functions that return "
                f"a value. Hint: iterate each call with `async for item in fn(x)`"
            )


async def _collect(results: AsyncIterator[Any]) -> list[Any]:
    return [result async for result in results]


def _label(handle: Any) -> str:
    label = getattr(handle, "_label", "")
    return str(label() if callable(label) else label) or f"{getattr(handle, '__name__', '?')}()"


class Method(FanOut):
    """A remote instance's method: calling it runs it; it fans out as functions do."""

    def __init__(self, call: Callable[..., Any], name: str, label: str, window: int) -> None:
        self._call = call
        self.__name__ = name
        self._label = label
        self._window = window

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def _fan_window(self) -> int:
        return self._window

    def __repr__(self) -> str:
        return f"<remote method {self._label}>"
