"""The worker's ERROR frames: what a call's exception becomes on the wire (standard library and
cloudpickle only, like the child).

An exception is user code: its ``__str__`` or ``__repr__`` may raise, return something other than
a str, or its attributes may fail. None of that may keep the caller from its answer, so every
piece of the frame is built with a fallback (the exception's type name and a note saying what
could not be made), and a frame that still cannot be built becomes a minimal one.
"""

from __future__ import annotations

import concurrent.futures.thread
import os
import traceback
from typing import Any

import cloudpickle

from openflash.workers import protocol

__all__ = ["error_frame", "safe_text"]

_HERE = os.path.dirname(os.path.abspath(__file__))
#: The runtime's frames at the top of a call's traceback (how the call reached user code).
_RUNTIME_FILES = frozenset(
    [
        os.path.join(_HERE, "child.py"),
        os.path.join(_HERE, "interrupts.py"),
        os.path.abspath(concurrent.futures.thread.__file__),
    ]
)
#: The light client's own frames, at the end of a nested call's traceback.
_CLIENT_FILES = frozenset(os.path.join(_HERE, f) for f in ("client.py", "channel.py"))


def safe_text(error: BaseException) -> str:
    """``str(error)``, or, where that fails, its ``repr`` or its type, with a note saying why.

    (``str()`` and ``repr()`` themselves raise TypeError when ``__str__`` or ``__repr__`` return
    something other than a str.)
    """
    try:
        return _plain(str(error))
    except BaseException as e:  # user code, anything may come out of it
        problem = f"str() raised {_describe(e)}"
    try:
        shown = _plain(repr(error))
    except BaseException:
        shown = f"<{_type_name(type(error))} object>"
    return f"{shown} (the exception's text could not be made: {problem})"


def error_frame(call_id: int, error: BaseException) -> bytes:
    """The ERROR frame for ``error``; never raises (a minimal frame where a full one fails)."""
    try:
        return _full_frame(call_id, error)
    except BaseException as e:
        return protocol.encode_error(
            call_id,
            type_name=_type_name(type(error)),
            message=f"{safe_text(error)} (its traceback could not be made: {_describe(e)})",
            traceback="",
            exception=None,
            missing_module=None,
        )


def _full_frame(call_id: int, error: BaseException) -> bytes:
    te = traceback.TracebackException.from_exception(error)
    frames = list(te.stack)
    while frames and os.path.abspath(frames[0].filename) in _RUNTIME_FILES:
        frames.pop(0)  # how the call reached user code is of no interest to the user
    while len(frames) > 1 and os.path.abspath(frames[-1].filename) in _CLIENT_FILES:
        frames.pop()  # nor how a nested call's error was raised
    te.stack = traceback.StackSummary.from_list(frames)
    if _is_nested_failure(error):
        return _nested_error_frame(call_id, error, te.stack)
    message = safe_text(error)
    text = "".join(te.format())  # the stdlib's own fallback: "<exception str() failed>"
    missing = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
    return protocol.encode_error(
        call_id,
        type_name=_type_name(type(error)),
        message=message,
        traceback=text,
        exception=pickled(error),
        missing_module=missing if isinstance(missing, str) else None,
    )


def pickled(error: BaseException | None) -> bytes | None:
    """The exception as cloudpickle bytes, or None where it does not pickle."""
    try:
        return cloudpickle.dumps(error) if error is not None else None
    except BaseException:  # its __reduce__ is user code too
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


def _plain(text: str) -> str:
    """A str subclass (which the caller may not import, and whose methods are user code) as a
    plain str."""
    return str.__add__("", text)


def _type_name(cls: type) -> str:
    """The qualified name of an exception's class (``module.Qualname``, builtins bare)."""
    try:
        module, name = cls.__module__, cls.__qualname__
        if isinstance(module, str) and isinstance(name, str):
            return name if module in ("builtins", "__main__") else f"{module}.{name}"
    except BaseException:  # a metaclass may make these anything
        pass
    return type.__repr__(cls)


def _describe(error: BaseException) -> str:
    """``Type: text`` of an exception raised while describing another, itself guarded."""
    try:
        text = str(error)
        if isinstance(text, str) and text:
            return f"{_type_name(type(error))}: {_plain(text)}"
    except BaseException:
        pass
    return _type_name(type(error))
