"""The worker's main: ``python -m openflash.workers.child FD|stdio MAX_CONCURRENCY``.

It runs inside the endpoint's environment, with openflash's small runtime (this package's
``workers.child`` and ``workers.protocol``, and cloudpickle) importable from a directory placed
*after* the environment's site-packages, so whatever the user pinned wins. It imports only the
standard library and cloudpickle.

It reads CALL frames from the socket FD (or from stdin, answering on stdout, with ``stdio``: a
worker in a container, whose own prints then go to stderr), runs each call (coroutines on its
event loop, plain functions in a thread pool of MAX_CONCURRENCY threads) and answers RESULT or
ERROR. On a socket, a warm call of a plain function runs on the thread that read its frame, which
writes its reply itself (call_threads.py; connection.py has the rest of the wire). It exits when
the parent closes the socket, so a worker never outlives its pool, and it dies with its parent
process even while a call blocks its loop (``workers.lifeline``); the processes its calls started
end with it.

With ``OPENFLASH_MAX_RSS`` set (FLASH_WORKER_MAX_RSS), it caps its own private memory with
RLIMIT_DATA before anything else; a call that runs out answers a MemoryError naming the cap, and
the worker then exits, so that the next call starts from a fresh process.
"""

from __future__ import annotations

import os
import sys


def _isolate_path() -> None:
    """Move the runtime directory behind site-packages, and keep it from user subprocesses."""
    runtime_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if runtime_dir in sys.path:
        sys.path.remove(runtime_dir)
        sys.path.append(runtime_dir)
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p != runtime_dir]
    if any(rest):
        os.environ["PYTHONPATH"] = os.pathsep.join(rest)
    else:
        os.environ.pop("PYTHONPATH", None)


if __name__ == "__main__":
    _isolate_path()

import asyncio  # noqa: E402
import contextvars  # noqa: E402
import inspect  # noqa: E402
import socket  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

import cloudpickle  # noqa: E402

from openflash.workers import (  # noqa: E402
    call_threads,
    channel,
    error_frames,
    interrupts,
    lifeline,
    pickling,
    protocol,
    streaming,
)
from openflash.workers.connection import Worker  # noqa: E402

MAX_RSS_VARIABLE = "OPENFLASH_MAX_RSS"


class Executor:
    """Runs calls: functions and classes kept by id, coroutines on this loop, the rest in threads.

    Transport-free: ``reply`` turns a CALL payload into the RESULT or ERROR frame to send back.
    The socket server below uses it.
    """

    def __init__(self, max_concurrency: int) -> None:
        self.executor = ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix="openflash-call"
        )
        self.functions: dict[str, Any] = {}
        #: The memory cap in bytes, if any; set once a call has run out of memory under it.
        self.max_rss: int | None = None
        self.exhausted = False
        #: Instances of decorated classes, by id; a future while the constructor runs, so that
        #: calls arriving meanwhile wait for it instead of finding nothing.
        self.instances: dict[str, asyncio.Future[Any]] = {}
        #: The top-level modules the caller can import (a CALLER frame), if it said.
        self.caller_modules: frozenset[str] | None = None
        self.send: streaming.Send | None = None  # ITEM frames' way out (None: cannot stream)
        self.credits = streaming.Credits()

    async def reply(self, call_id: int, payload: bytes) -> list[protocol.Buffer]:
        """The frame to send back, in parts (a result's large buffers each on its own)."""
        channel.current_call.set(call_id)  # nested calls name the call they are made for
        try:
            call = protocol.decode_call(payload)
            target = await self.target(call)
            args, kwargs = pickling.load_arguments(call.args)
            result = await self.invoke(target, args, kwargs)
            return await self.finish(call_id, call, result)
        except BaseException as e:  # everything goes back to the caller
            return self.failed(call_id, e)

    async def finish(
        self, call_id: int, call: protocol.CallPayload, result: Any
    ) -> list[protocol.Buffer]:
        """The RESULT of a call whose function returned ``result`` (a stream served first)."""
        if inspect.isawaitable(result):
            result = await result
        if call.stream or streaming.is_stream(result):
            await streaming.serve(self, call_id, result, call.stream)
            result = None  # the RESULT that ends the stream
        data = self.pack_result(result, call.caller)
        return protocol.encode_packed(protocol.RESULT, call_id, data)

    def failed(self, call_id: int, e: BaseException) -> list[protocol.Buffer]:
        """The ERROR frame of a call that raised ``e``."""
        if isinstance(e, pickling.ArgumentsNotLoadable):
            error = protocol.encode_error(
                call_id,
                type_name=protocol.ARGUMENTS_NOT_LOADABLE,
                message=str(e.__cause__),
                traceback="",
                exception=None,
                missing_module=e.missing,
            )
            return [error]
        if isinstance(e, MemoryError) and self.max_rss is not None:
            self.exhausted = True
            e = _over_cap(e, self.max_rss)
        return [error_frames.error_frame(call_id, e)]

    def plain(self, call: protocol.CallPayload) -> Any:
        """The plain function ``call`` runs, where the thread that read it may run it itself
        (call_threads.py); None where the loop runs it (async functions and generators, methods,
        streams, a function this worker does not hold yet)."""
        if call.op != protocol.OP_FUNCTION or call.stream or call.blob is not None:
            return None
        fn = self.functions.get(call.target)
        if self.exhausted or not isinstance(fn, types.FunctionType):
            return None
        flags = inspect.CO_COROUTINE | inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
        return None if fn.__code__.co_flags & flags else fn

    def release(self, instance_id: str) -> None:
        self.instances.pop(instance_id, None)

    async def target(self, call: protocol.CallPayload) -> Any:
        if call.op == protocol.OP_FUNCTION:
            if call.blob is not None:
                self.functions[call.target] = _load(call.blob, call.source)
            return self.functions[call.target]
        future = self.instances.get(call.target)
        if future is None:
            if call.blob is None or call.init_args is None:
                raise RuntimeError(f"instance {call.target} is not on this worker")
            future = asyncio.ensure_future(self.create(call.blob, call.source, call.init_args))
            self.instances[call.target] = future
        try:
            instance = await asyncio.shield(future)
        except BaseException:
            if self.instances.get(call.target) is future:
                del self.instances[call.target]  # a later call may try again
            raise
        return getattr(instance, call.method)

    async def create(
        self, blob: bytes, source: str | None, init_args: bytes | protocol.Packed
    ) -> Any:
        cls = _load(blob, source)
        args, kwargs = pickling.load_arguments(init_args)
        return await self.invoke(cls, args, kwargs)

    async def invoke(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        future = loop.run_in_executor(self.executor, lambda: context.run(fn, *args, **kwargs))
        result = await interrupts.in_thread(future)  # a cancelled call waits for its thread
        if inspect.isawaitable(result):
            result = await result
        return result

    def pack_result(self, result: Any, caller: tuple[str, ...] | None) -> protocol.Packed:
        """A RESULT's pickle, its large buffers out of band (as ``dump_result`` otherwise)."""
        plain = pickling.plain_pickle(result)
        if plain is not None:  # nothing in it the caller could lack
            return protocol.Packed(plain)
        known = self.caller_modules if caller is None else frozenset(caller)
        try:
            lacks = None if known is None else (lambda module: module not in known)
            return pickling.pack(result, lacks)
        except Exception as e:
            raise TypeError(
                f"the function returned a {type(result).__name__}, which cannot be pickled "
                f"to send back: {e}"
            ) from e

    def dump_result(self, result: Any, caller: tuple[str, ...] | None = None) -> bytes:
        known = self.caller_modules if caller is None else frozenset(caller)
        try:
            if known is None:
                blob: bytes = cloudpickle.dumps(result)
                return blob
            return pickling.dumps(result, lambda module: module not in known)
        except Exception as e:
            raise TypeError(
                f"the function returned a {type(result).__name__}, which cannot be pickled "
                f"to send back: {e}"
            ) from e


def _over_cap(error: MemoryError, cap: int) -> MemoryError:
    replaced = MemoryError(
        f"the worker ran out of memory under its cap, FLASH_WORKER_MAX_RSS={cap} bytes "
        f"({cap / 2**20:.0f} MiB){': ' + str(error) if str(error) else ''}; the worker is "
        "replaced for the next call. Raise FLASH_WORKER_MAX_RSS, or use less memory"
    )
    replaced.__traceback__ = error.__traceback__
    return replaced


def _apply_memory_cap(executor: Executor) -> None:
    text = os.environ.pop(MAX_RSS_VARIABLE, "")
    if not text:
        return
    import resource

    cap = int(text)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    executor.max_rss = cap


def _load(blob: bytes, source: str | None) -> Any:
    """Unpickle a function or class, giving its code back the file it came from.

    cloudpickle names the file of code it sends by value ``<dynamic-code>``; restoring the real
    name lets tracebacks show the file, and the source line where the file is readable here.
    """
    obj = cloudpickle.loads(blob)
    if source:
        for fn in functions_of(obj):
            fn.__code__ = _with_filename(fn.__code__, source)
    return obj


def functions_of(obj: Any) -> list[types.FunctionType]:
    """The functions of a decorated function or class (methods, static/class methods, property
    accessors)."""
    if isinstance(obj, types.FunctionType):
        return [obj]
    found = []
    for value in vars(obj).values() if isinstance(obj, type) else ():
        for candidate in (
            value,
            getattr(value, "__func__", None),
            getattr(value, "fget", None),
            getattr(value, "fset", None),
        ):
            if isinstance(candidate, types.FunctionType):
                found.append(candidate)
    return found


def _with_filename(code: types.CodeType, source: str) -> types.CodeType:
    if code.co_filename != "<dynamic-code>":
        return code
    consts = tuple(
        _with_filename(c, source) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=source, co_consts=consts)


async def _stdio_streams() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Frames over stdin and stdout (a worker in a container); the user's prints go to stderr."""
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd_in, "rb", buffering=0)
    )
    transport, flow = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(fd_out, "wb", buffering=0)
    )
    return reader, asyncio.StreamWriter(transport, flow, reader, loop)


async def serve(fd: int | None, max_concurrency: int) -> int:
    """Serve calls on the socket ``fd``, or on stdin and stdout when ``fd`` is None; the exit
    code: 0 when the pool ended it, 1 when it failed outside a call (call_threads.Reader.fail)."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    wire: call_threads.Wire | None = None
    if fd is None:
        reader, writer = await _stdio_streams()
    else:  # read by threads (call_threads.py), written whole frames at a time from any thread
        sock = socket.socket(fileno=fd)
        sock.setblocking(True)
        wire = call_threads.Wire(sock)
    executor = Executor(max_concurrency)
    _apply_memory_cap(executor)
    worker = Worker(writer, executor, wire)
    executor.send = worker.send
    loop = asyncio.get_running_loop()
    streaming.open_outlet(worker.send, loop, executor.dump_result)
    worker.nested = channel.open_channel(worker.send)
    ready = {"pid": os.getpid(), "python": sys.version.split()[0], "executable": sys.executable}
    await worker.send(protocol.encode(protocol.READY, 0, protocol.dumps(ready)))
    if wire is not None:
        threads = call_threads.Reader(
            wire.sock, loop, worker.receive, worker.claim, max_concurrency
        )
        worker.nested.before_wait = threads.hand_off
        wire.failed = threads.fail
        threads.start()
        await threads.closed
        return 0 if threads.failure is None else 1
    assert reader is not None
    while True:
        frame = await protocol.read_frame(reader)
        if frame is None or frame.kind == protocol.SHUTDOWN:
            return 0
        worker.receive(frame)


def main(argv: list[str], guardian: int | None = None, death_signal: bool = True) -> None:
    """Serve until the pool closes the socket; die with process ``guardian`` (default: the one
    the starter named, ``workers.lifeline``; ``death_signal`` where it is the parent), and take
    the processes the calls started along at the end."""
    if len(argv) != 3:
        sys.exit("usage: python -m openflash.workers.child FD|stdio MAX_CONCURRENCY")
    lifeline.arm(guardian, death_signal=death_signal)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        code = asyncio.run(serve(None if argv[1] == "stdio" else int(argv[1]), int(argv[2])))
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Calls still running in threads end with the process: the pool has given up on them; what
    # they started ends with it too.
    lifeline.kill_others()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
