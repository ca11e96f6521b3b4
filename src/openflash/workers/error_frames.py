"""A call's exception as an ERROR frame: its type, text, traceback (without the runtime's own
frames) and, where it pickles, the exception itself; a nested call's failure with both
tracebacks. Part of the worker runtime: standard library and cloudpickle only.
"""

from __future__ import annotations

import concurrent.futures.thread
import os
import traceback
from typing import Any

import cloudpickle

from openflash.workers import interrupts, protocol

__all__ = ["error_frame", "pickled"]

_HERE = os.path.dirname(os.path.abspath(__file__))
#: How a call reaches user code: of no interest in its traceback.
_RUNTIME_FILES = frozenset(
    os.path.abspath(f)
    for f in (
        os.path.join(_HERE, "child.py"),
        interrupts.__file__,
        concurrent.futures.thread.__file__,
    )
)
#: The light client's own frames, at the end of a nested call's traceback.
_CLIENT_FILES = frozenset(os.path.join(_HERE, f) for f in ("client.py", "channel.py"))


def error_frame(call_id: int, error: BaseException) -> bytes:
    te = traceback.TracebackException.from_exception(error)
    frames = list(te.stack)
    while frames and os.path.abspath(frames[0].filename) in _RUNTIME_FILES:
        frames.pop(0)  # how the call reached user code is of no interest to the user
    while len(frames) > 1 and os.path.abspath(frames[-1].filename) in _CLIENT_FILES:
        frames.pop()  # nor how a nested call's error was raised
    te.stack = traceback.StackSummary.from_list(frames)
    if _is_nested_failure(error):
        return _nested_error_frame(call_id, error, te.stack)
    return protocol.encode_error(
        call_id,
        type_name=_qualified_name(type(error)),
        message=str(error),
        traceback="".join(te.format()),
        exception=pickled(error),
        missing_module=error.name if isinstance(error, ModuleNotFoundError) else None,
    )


def pickled(error: BaseException | None) -> bytes | None:
    try:
        return cloudpickle.dumps(error) if error is not None else None
    except Exception:
        return None


def _is_nested_failure(error: BaseException) -> bool:
    """A RemoteError from a nested call (the light client raises openflash.errors')."""
    return isinstance(getattr(error, "remote_traceback", None), str) and isinstance(
        getattr(error, "exc_type", None), str
    )


def _nested_error_frame(call_id: int, error: Any, stack: traceback.StackSummary) -> bytes:
    """An inner function's exception that went through this one: reported as the original
    exception (its type and text, where each call raised it), with both tracebacks."""
    exc_type: str = error.exc_type
    message: str = error.message
    if message.startswith(f"{exc_type}: "):
        message = message[len(exc_type) + 2 :]
    inner = error.remote_traceback.rstrip()
    if error.hint and error.hint != type(error).hint:
        inner += f"\nHint: {error.hint}"
    text = (
        f"{inner}\n\nThe nested call above failed here:\nTraceback (most recent call last):\n"
        + "".join(stack.format())
        + f"{exc_type}: {message}\n"
    )
    return protocol.encode_error(
        call_id,
        type_name=exc_type,
        message=message,
        traceback=text,
        exception=pickled(getattr(error, "exception", None)),
        missing_module=None,
    )


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    return (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )
