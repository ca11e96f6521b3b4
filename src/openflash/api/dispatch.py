"""A handle's call through the process's runtime and back: the result loaded, a remote error
raised as the caller's, and a call sent again in portable form when its worker lacks a module
its arguments need (api/values.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from openflash.api import values
from openflash.errors import DependencyError, FlashError
from openflash.runtime.definitions import EndpointDef
from openflash.runtime.failures import remote_error
from openflash.runtime.process import get_runtime
from openflash.workers import payloads, protocol
from openflash.workers.calls import Call

__all__ = ["release", "run"]


async def run(endpoint: EndpointDef, call: Call, again: Callable[[], Call], lacks: set[str]) -> Any:
    """Run ``call``; when its worker lacks a module its arguments need, learn that into
    ``lacks`` and run it ``again`` (its arguments then pickled in portable form)."""
    while True:
        try:
            reply = await get_runtime().call(endpoint, call)
        except FlashError as e:
            # The same error may reach several callers (a shared build, a crashed worker's
            # calls): each gets its own copy, raised here rather than from deep in the runtime.
            error = copy.copy(e)
            if isinstance(e, DependencyError) and not e.message.startswith("endpoint "):
                error.message = f"endpoint {endpoint.name!r}: {e.message}"
                error.args = (error.message,)
            raise error from None
        if reply.ok:
            result = values.load_result(endpoint.name, call.label, reply.payload)
            payloads.release(reply.payload)  # a large str result's frame: unmapped now
            return result
        info = protocol.decode_error(reply.payload)
        missing = values.missing_module(info)
        if missing is None or missing in lacks:
            raise remote_error(endpoint, call, info)
        lacks.add(missing)
        call = again()


def release(endpoint: EndpointDef, instance_id: str) -> None:
    """Let the worker that holds a remote instance drop it (its handle was collected)."""
    from openflash.runtime import process

    if process._runtime is not None:
        process._runtime.release_instance(endpoint, instance_id)
