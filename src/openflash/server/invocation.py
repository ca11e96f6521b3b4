"""From an HTTP request to a call and back: input models, invocation, JSON output, errors.

A function's parameters become a pydantic model (names, annotations, defaults), so a request is
validated before any worker is involved: bad or missing fields are a 422 with details. A result
becomes JSON with FastAPI's encoder (bytes as base64). What the call raised becomes a status:
a timeout is TIMED_OUT (504), anything else FAILED (500) with the remote error's text.
"""

from __future__ import annotations

import base64
import inspect
import typing
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, create_model

from openflash.errors import ExecutionTimeoutError, FlashError, RemoteError

__all__ = ["Outcome", "call_outcome", "input_model", "parameters_of", "to_json"]


def parameters_of(fn: Any) -> list[inspect.Parameter]:
    """The parameters a caller fills (``self`` of a method excluded)."""
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def input_model(fn: Any, name: str) -> type[BaseModel]:
    """A pydantic model of ``fn``'s parameters (unannotated ones accept anything)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # annotations that do not resolve here (e.g. a worker-only type)
        hints = {}
    fields: dict[str, Any] = {}
    for param in parameters_of(fn):
        declared = Any if param.annotation is inspect.Parameter.empty else param.annotation
        annotation = hints.get(param.name, declared)
        if not _usable(annotation):
            annotation = Any
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    return create_model(
        name, __config__=ConfigDict(extra="ignore", arbitrary_types_allowed=True), **fields
    )


def _usable(annotation: Any) -> bool:
    """Whether pydantic can validate JSON into ``annotation``."""
    try:
        create_model("_Probe", value=(annotation, ...))
    except Exception:
        return False
    return True


def to_json(value: Any) -> Any:
    """``value`` as JSON-compatible data; bytes become base64 text."""
    return jsonable_encoder(value, custom_encoder={bytes: lambda b: base64.b64encode(b).decode()})


class Outcome(typing.NamedTuple):
    status: str
    output: Any
    error: str | None
    http_status: int


async def call_outcome(invoke: typing.Awaitable[Any]) -> Outcome:
    """Await a call and say how it ended, in Runpod's terms."""
    try:
        result = await invoke
    except ExecutionTimeoutError as e:
        return Outcome("TIMED_OUT", None, str(e), 504)
    except RemoteError as e:
        return Outcome("FAILED", None, str(e), 500)
    except FlashError as e:
        return Outcome("FAILED", None, str(e), 500)
    try:
        return Outcome("COMPLETED", to_json(result), None, 200)
    except Exception as e:
        return Outcome("FAILED", None, f"the result cannot be sent as JSON: {e}", 500)
