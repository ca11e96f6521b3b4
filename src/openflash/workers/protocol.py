"""Frames between a pool and its worker: bytes on the wire, nothing about processes.

A frame is a 17-byte header (kind: u8, call id: u64, payload length: u64, network order) followed
by the payload. The parent sends CALL, RELEASE and SHUTDOWN; the worker sends READY once, then
RESULT or ERROR for each CALL (a generator's ITEMs before its RESULT, PROGRESS at any time,
IMPORTED before the answer of one of its first calls).
Right after READY, the parent sends CALLER once (the modules the caller can import). A function
running in a worker may call another endpoint: the worker sends NESTED (its own numbering of such
calls in the call id field) and the parent answers NESTED_REPLY with that id; a worker drops a
class instance it made that way with RELEASE. A worker's first NESTED names the modules it can
import, and the CALL of each nested call names them, so that its result is converted for the
worker that made it (not for the parent).
Payloads are pickles whose shapes are fixed by the helpers below. A call's arguments and its
result are pickles of protocol 5 with out-of-band buffers (numpy arrays, memoryviews, objects
exporting a PickleBuffer): such a payload is an envelope (``MAGIC``, the number of parts, each
part's length, then the parts: the pickle, then its buffers), written part by part (a large
buffer is never copied into one bytes with the rest) and read into one preallocated buffer, which
the loaded values then share.

This module is part of the worker runtime: it imports the standard library (and payloads.py).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
from collections.abc import Callable
from typing import Any, NamedTuple, TypedDict, cast

from openflash.workers import payloads
from openflash.workers.payloads import Buffer as Buffer
from openflash.workers.payloads import FrameError as FrameError
from openflash.workers.payloads import Packed as Packed
from openflash.workers.payloads import collector as collector
from openflash.workers.payloads import pack as pack
from openflash.workers.payloads import packed as packed
from openflash.workers.payloads import reduce_buffer as reduce_buffer
from openflash.workers.payloads import write_chunked as write_chunked
from openflash.workers.payloads import write_parts as write_parts

HEADER = struct.Struct("!BQQ")

READY = 1
CALL = 2
RESULT = 3
ERROR = 4
RELEASE = 5
SHUTDOWN = 6
#: From a worker: it is about to exit (e.g. out of memory under its cap); send it nothing more.
RETIRE = 7
#: From a worker: call another endpoint (a NestedRequest); the parent answers NESTED_REPLY.
NESTED = 8
NESTED_REPLY = 9
#: From the parent, once, right after READY: the top-level modules the caller can import and
#: its register_portable rules (pickling.caller_payload), so that results of classes it lacks
#: go back in portable form (portable.py). A worker that never gets one sends results as they are.
CALLER = 10
#: Streaming (streaming.py): from a worker, one item a generator yielded (pickled as a result),
#: before the RESULT that ends the stream; from the parent, CREDIT (one more item may be sent)
#: and CANCEL (stop the call's generator); from a worker, PROGRESS (a pickled progress value).
ITEM = 11
CREDIT = 12
CANCEL = 13
PROGRESS = 14
#: From a worker, during its first calls, before a call's RESULT or ERROR: the modules it
#: imported since the last such frame (workers/learning.py), for the next template to preload.
IMPORTED = 15

#: An ERROR's type when the worker could not unpickle a call's arguments for lack of a module
#: (``missing_module``): the caller may send them again in portable form.
ARGUMENTS_NOT_LOADABLE = "openflash.ArgumentsNotLoadable"

KIND_NAMES = {
    READY: "READY",
    CALL: "CALL",
    RESULT: "RESULT",
    ERROR: "ERROR",
    RELEASE: "RELEASE",
    SHUTDOWN: "SHUTDOWN",
    RETIRE: "RETIRE",
    NESTED: "NESTED",
    NESTED_REPLY: "NESTED_REPLY",
    CALLER: "CALLER",
    ITEM: "ITEM",
    CREDIT: "CREDIT",
    CANCEL: "CANCEL",
    PROGRESS: "PROGRESS",
    IMPORTED: "IMPORTED",
}

#: A call runs a function (``target`` = the function's id) or a method of an instance
#: (``target`` = the instance's id), creating the instance first if the worker lacks it.
OP_FUNCTION = "fn"
OP_METHOD = "method"


class Frame(NamedTuple):
    kind: int
    call_id: int
    payload: bytes


class CallPayload(NamedTuple):
    op: str
    target: str
    #: The pickled function or class, sent only to a worker that does not hold ``target`` yet.
    blob: bytes | None
    #: The method name (OP_METHOD).
    method: str
    #: The pickled ``(args, kwargs)`` (a Packed: its buffers travel out of band).
    args: bytes | Packed
    #: The pickled ``(args, kwargs)`` of the constructor (OP_METHOD).
    init_args: bytes | Packed | None
    #: The file the function or class was defined in, sent with ``blob``, for tracebacks.
    source: str | None = None
    #: Whether the caller streams a generator's items (ITEM frames before the RESULT).
    stream: bool = False
    #: The top-level modules the result is for, where they are not the CALLER frame's: a nested
    #: call's result goes to the worker that made it (None: the CALLER frame's).
    caller: tuple[str, ...] | None = None


class NestedRequest(NamedTuple):
    """A call a worker makes to a decorated function or class of its project."""

    #: The file the decorated object is defined in (resolved), and its qualified name.
    file: str
    qualname: str
    #: The id of the CALL during which it was made (0: none known).
    outer: int
    op: str
    #: The pickled ``(args, kwargs)``, passed on as they are.
    args: bytes
    #: OP_METHOD: the instance's id, the method, the constructor's pickled ``(args, kwargs)``.
    instance: str = ""
    method: str = ""
    init_args: bytes | Packed | None = None
    #: The top-level modules the calling worker can import: sent with its first nested call
    #: (the relay keeps them for that worker's later ones), so that results come to it portable.
    caller: tuple[str, ...] | None = None


class NestedReply(NamedTuple):
    """The parent's answer: a pickled result, or an error (``error`` says how it is encoded)."""

    ok: bool
    #: The result as the target worker pickled it (ok), else the encoded error.
    payload: bytes
    #: "remote": an ``encode_error`` dict plus the parent's ``message`` and ``hint``;
    #: "flash": a pickled FlashError (timeouts, crashes, deadlocks, build errors).
    error: str = ""


class ErrorInfo(TypedDict):
    """An ERROR reply's payload: what the worker tells of an exception its call raised."""

    #: The exception's qualified type name.
    type: str
    message: str
    traceback: str
    #: The pickled exception, where it pickled in the worker.
    exception: bytes | None
    #: The module a ModuleNotFoundError names.
    missing_module: str | None


def encode(kind: int, call_id: int = 0, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, call_id, len(payload)) + payload


def _max_frame() -> int:
    """The largest payload a frame may announce: this machine's physical memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


#: A header announcing a larger payload is corrupt (FrameError), not allocated.
MAX_FRAME = _max_frame()


async def read_frame(
    reader: asyncio.StreamReader, on_header: Callable[[], None] | None = None
) -> Frame | None:
    """The next frame, or None when the other side has closed the stream; FrameError when
    its header announces a payload no frame can have (more than MAX_FRAME bytes), or one that
    cannot be allocated here. ``on_header`` is called once the header is taken from ``reader``
    (workers/replies.py: the reader is then inside a frame)."""
    try:
        header = await reader.readexactly(HEADER.size)
        if on_header is not None:
            on_header()
        kind, call_id, size = HEADER.unpack(header)
        if size > MAX_FRAME:
            raise FrameError(
                f"a frame header (kind {kind}, call {call_id}) announces {size} bytes, more "
                f"than this machine's memory ({MAX_FRAME} bytes): the stream is corrupt"
            )
        if size >= payloads.PREALLOCATE:
            return Frame(kind, call_id, cast(bytes, await payloads.read_into(reader, size)))
        payload = await reader.readexactly(size) if size else b""
    except (asyncio.IncompleteReadError, OSError):  # closed, reset, or its socket gone
        return None
    return Frame(kind, call_id, payload)


def dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def encode_packed(kind: int, call_id: int, value: Packed) -> list[Buffer]:
    """A frame of ``value``, in parts to write one after the other (payloads.envelope)."""
    data = value.data
    if not value.buffers and type(data) is bytes and len(data) < payloads.SEPARATE:
        return [HEADER.pack(kind, call_id, len(data)) + data]  # one small frame
    return payloads.envelope(value, lambda size: HEADER.pack(kind, call_id, size))


def loads(data: Buffer) -> Any:
    """A payload unpickled: a plain pickle, or an envelope with its out-of-band buffers."""
    return payloads.unpack(data).load()


def load_exception(data: bytes | None) -> BaseException | None:
    """The pickled exception of an ERROR (or nested error) reply, where it unpickles here."""
    if not data:
        return None
    try:
        error = pickle.loads(data)
    except Exception:  # its class is not importable here, or its state does not unpickle
        return None
    return error if isinstance(error, BaseException) else None


def encode_call(call_id: int, call: CallPayload) -> list[Buffer]:
    """A CALL frame's parts: its arguments (a Packed) go out of band, pickled only once.
    Small arguments without buffers are plain bytes in one plain pickle (the common call)."""
    args = call.args
    if isinstance(args, Packed) and not args.buffers and len(args.data) < payloads.SEPARATE:
        return [encode(CALL, call_id, dumps(tuple(call._replace(args=bytes(args.data)))))]
    return encode_packed(CALL, call_id, payloads.pack(tuple(call)))


def decode_call(payload: bytes) -> CallPayload:
    if payload[:4] != payloads.MAGIC:  # a plain pickle: the common call (``encode_call``)
        return CallPayload(*pickle.loads(payload))
    return CallPayload(*loads(payload))


def encode_error(
    call_id: int,
    *,
    type_name: str,
    message: str,
    traceback: str,
    exception: bytes | None,
    missing_module: str | None,
) -> bytes:
    info: ErrorInfo = {
        "type": type_name,
        "message": message,
        "traceback": traceback,
        "exception": exception,
        "missing_module": missing_module,
    }
    return encode(ERROR, call_id, dumps(info))


def decode_error(payload: bytes) -> ErrorInfo:
    info: ErrorInfo = loads(payload)
    return info


def encode_nested(nested_id: int, request: NestedRequest) -> bytes:
    return encode(NESTED, nested_id, dumps(tuple(request)))


def decode_nested(payload: bytes) -> NestedRequest:
    return NestedRequest(*loads(payload))


def encode_nested_reply(nested_id: int, reply: NestedReply) -> bytes:
    return encode(NESTED_REPLY, nested_id, dumps(tuple(reply)))


def decode_nested_reply(payload: bytes) -> NestedReply:
    return NestedReply(*loads(payload))
