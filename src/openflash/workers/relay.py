"""The pool's side of nested calls: a worker's NESTED frames relayed to whoever owns the pools.

A function running on a worker calls another endpoint; its worker sends NESTED (channel.py on the
worker's side). The pool hands each such frame to a Relay, which runs it through the
``NestedHandler`` the runtime gave the pool (it finds the target endpoint and submits the call
to that endpoint's pool) and writes the answer back as NESTED_REPLY. A nested call is linked to
the call it was made for, so that deadlock checks (waits.py) see who waits on whom; when its
worker dies, what it was still waiting for is cancelled. A worker's first nested call names the
modules it can import; the relay keeps them for its later ones, and each nested call carries them
to the worker that runs it, which converts the result for them (portable.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from openflash.errors import FlashError
from openflash.workers import protocol
from openflash.workers.calls import Call

__all__ = ["NestedHandler", "Relay"]

logger = logging.getLogger("openflash")


class NestedHandler(Protocol):
    async def call(
        self, outer: Call | None, request: protocol.NestedRequest
    ) -> protocol.NestedReply:
        """Run ``request``, made during ``outer``; failures come back as an error reply."""

    def release(self, file: str, qualname: str, instance_id: str) -> None:
        """Drop an instance of a decorated class that a worker made."""


class Relay:
    """Nested calls of one pool's workers, each tracked by the worker that made it."""

    def __init__(self, endpoint: str, handler: NestedHandler | None) -> None:
        self.endpoint = endpoint
        self.handler = handler
        self._tasks: dict[object, set[asyncio.Task[None]]] = {}
        #: The modules each worker can import, as its first nested call said.
        self._modules: dict[object, tuple[str, ...]] = {}

    def receive(
        self,
        worker: object,
        frame: protocol.Frame,
        in_flight: dict[int, Call],
        write: Callable[[bytes], None],
    ) -> None:
        """A NESTED or RELEASE frame from ``worker``, whose calls are ``in_flight``."""
        if frame.kind == protocol.RELEASE:
            if self.handler is not None:
                with contextlib.suppress(Exception):  # a malformed release drops nothing
                    self.handler.release(*protocol.loads(frame.payload))
            return
        task = asyncio.ensure_future(self._serve(worker, frame, in_flight, write))
        tasks = self._tasks.setdefault(worker, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _serve(
        self,
        worker: object,
        frame: protocol.Frame,
        in_flight: dict[int, Call],
        write: Callable[[bytes], None],
    ) -> None:
        try:
            request = protocol.decode_nested(frame.payload)
        except Exception as e:
            logger.warning("openflash: endpoint %r: a malformed nested call: %s", self.endpoint, e)
            return
        if request.caller is not None:
            self._modules[worker] = request.caller
        else:
            request = request._replace(caller=self._modules.get(worker))
        if self.handler is None:
            error = FlashError(
                f"{request.qualname}() was called from a worker of endpoint {self.endpoint!r}, "
                "whose pool does not take nested calls",
                hint="call it from the caller instead",
            )
            reply = protocol.NestedReply(False, protocol.dumps(error), "flash")
        else:
            reply = await self.handler.call(in_flight.get(request.outer), request)
        with contextlib.suppress(Exception):  # the worker is gone: nobody to answer
            write(protocol.encode_nested_reply(frame.call_id, reply))

    def forget(self, worker: object) -> None:
        """``worker`` is gone: cancel the nested calls it was waiting for."""
        self._modules.pop(worker, None)
        for task in self._tasks.pop(worker, set()):
            task.cancel()
