"""From an HTTP request to a call and back: input models, invocation, JSON output, errors.

A function's parameters become a pydantic model (names, annotations, defaults), so a request is
validated before any worker is involved: bad or missing fields are a 422 with details. The call
gets the validated values themselves (``arguments``): a parameter declared as a pydantic model
or a dataclass receives one. A result
becomes JSON (``to_json``): values of packages (numpy, pandas, torch, PIL, pydantic, dataclasses,
builtin subclasses) first take their portable form (workers/portable.py's table), then FastAPI's
encoder writes the rest (datetime and date as ISO 8601, UUID and Decimal, sets as lists, bytes as
base64); a value neither can encode becomes a string naming its type, never a 500. What the
call raised becomes a status: a timeout is TIMED_OUT (504), anything else FAILED (500) with
the remote error's text. A result is encoded to JSON once (server/results.py); one larger than
``FLASH_MAX_RESULT_BYTES`` is FAILED (507, Insufficient Storage: the server will not hold it)
with the size, the cap and the setting.

A queue route's body is read by ``JsonBodyRoute``: pydantic's JSON validator parses and
validates it in one pass (no dict built first, no dependency solving per request); what it
refuses is the ``RequestValidationError`` FastAPI raises for the same body, so app.py answers
both the same 422.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import inspect
import json
import logging
import typing
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.encoders import ENCODERS_BY_TYPE
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from starlette.requests import Request
from starlette.responses import Response

from openflash.errors import ExecutionTimeoutError, FlashError, RemoteError
from openflash.server import results
from openflash.workers import portable

__all__ = [
    "JobIdRoute",
    "JsonBodyRoute",
    "Outcome",
    "arguments",
    "call_outcome",
    "flat_body_type",
    "input_model",
    "parameters_of",
    "to_json",
    "validated",
]

logger = logging.getLogger("openflash")


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


class JsonBodyRoute(APIRoute):
    """A route whose endpoint takes one keyword argument, ``body``, annotated with a pydantic
    model: the request's JSON body validated into it by pydantic's JSON parser, in one pass.
    The schema (/docs) is FastAPI's, from the same annotation. A body it refuses is read
    again as FastAPI reads it (``json.loads``, then the model), so the errors are FastAPI's: a
    missing body is ``missing`` at ``("body",)``, text that is not JSON ``json_invalid`` at
    ``("body", position)``, a field's error at ``("body", *its loc)``, and a body that only
    FastAPI's reading accepts is accepted. One difference is pydantic's own: in JSON mode a
    strict model also takes the JSON forms of its types (an ISO 8601 string for a datetime),
    which a dict validated in Python mode refuses; a number for a ``Decimal`` is read from its
    text, not through a float."""

    @property
    def body_model(self) -> type[BaseModel]:
        """The model the body is validated into (the ``body`` parameter's annotation)."""
        model: type[BaseModel] = inspect.signature(self.endpoint).parameters["body"].annotation
        return model

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        model = self.body_model
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            try:
                body = await request.body()
            except Exception as e:  # as FastAPI answers a body it could not read
                raise HTTPException(400, "There was an error parsing the body") from e
            response: Response = await endpoint(body=validated(model, body))
            return response

        return handle


class JobIdRoute(APIRoute):
    """A route whose path ends in ``/{job_id}`` and whose endpoint takes only ``job_id`` (a
    string): FastAPI serves it as any route; server/fast_path.py answers it itself."""


def validated(model: type[BaseModel], body: bytes) -> BaseModel:
    """``body`` (JSON) validated into ``model``, or the ``RequestValidationError`` FastAPI's
    reading raises for it (see ``JsonBodyRoute``)."""
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing], body=None)
    try:
        return model.model_validate_json(body)
    except ValidationError:
        pass
    # Refused: FastAPI's own reading, so that the 422 says what it says for this body.
    try:
        value = json.loads(body)
    except ValueError as e:
        decode = e if isinstance(e, json.JSONDecodeError) else None
        error: dict[str, Any] = {
            "type": "json_invalid",
            "loc": ("body", decode.pos if decode else 0),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": decode.msg if decode else str(e)},
        }
        raise RequestValidationError([error], body=body) from None
    try:
        return model.model_validate(value, from_attributes=True)
    except ValidationError as e:
        errors = [
            {**found, "loc": ("body", *found["loc"])} for found in e.errors(include_url=False)
        ]
        raise RequestValidationError(errors, body=value) from None


def arguments(validated: BaseModel) -> dict[str, Any]:
    """The call's keyword arguments: each field as pydantic validated it, so a parameter declared
    as a model, a dataclass, a list or an Optional of them gets that type, not a dict (the values
    then cross to the worker as a Python caller's do: api/values.py)."""
    return {name: getattr(validated, name) for name in type(validated).model_fields}


def flat_body_type(fn: Any, names: list[str]) -> Any:
    """The declared type of ``fn``'s only body parameter when it is a required pydantic model or
    dataclass (FastAPI reads such a body flat, without the parameter's name), else None."""
    if len(names) != 1:
        return None
    param = inspect.signature(fn).parameters.get(names[0])
    if param is None or param.default is not inspect.Parameter.empty:
        return None
    try:
        declared = typing.get_type_hints(fn).get(names[0])
    except Exception:
        return None
    if not isinstance(declared, type):
        return None
    model = issubclass(declared, BaseModel) or dataclasses.is_dataclass(declared)
    return declared if model and _usable(declared) else None


def _usable(annotation: Any) -> bool:
    """Whether pydantic can validate JSON into ``annotation``."""
    try:
        create_model("_Probe", value=(annotation, ...))
    except Exception:
        return False
    return True


_JSON_ATOMS = (str, int, float, bool, type(None))


def to_json(value: Any) -> Any:
    """``value`` as JSON-compatible data (see the module's docstring); never raises."""
    if type(value) in _JSON_ATOMS:
        return value
    if isinstance(value, dict):
        return {_key(k): to_json(v) for k, v in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return [to_json(v) for v in value]
    if type(value) is bytes:
        return base64.b64encode(value).decode()
    converted = portable.portable_form(value)
    if converted is not portable.NO_RULE:
        return to_json(converted)
    for base in type(value).__mro__:
        encode = ENCODERS_BY_TYPE.get(base)
        if encode is not None:
            with contextlib.suppress(Exception):
                return to_json(encode(value))
    cls = type(value)
    name = f"{cls.__module__}.{cls.__qualname__}"
    logger.warning("openflash: a result held a %s, which has no JSON form", name)
    return f"<{name} cannot be encoded as JSON; return plain data or register_portable it>"


def _key(key: Any) -> str:
    encoded = to_json(key)
    return encoded if isinstance(encoded, str) else str(encoded)


class Outcome(typing.NamedTuple):
    status: str
    #: the JSON-compatible result, or its ``results.Encoded`` bytes where larger than
    #: ``results.INLINE_BYTES``; None unless COMPLETED
    output: Any
    error: str | None
    http_status: int
    #: the result's JSON, encoded once (COMPLETED only)
    encoded: results.Encoded | None = None


async def call_outcome(invoke: typing.Awaitable[Any], max_result: int | None = None) -> Outcome:
    """Await a call and say how it ended, in Runpod's terms; a result whose JSON is larger than
    ``max_result`` bytes (FLASH_MAX_RESULT_BYTES) FAILS with the reason."""
    try:
        result = await invoke
    except ExecutionTimeoutError as e:
        return Outcome("TIMED_OUT", None, str(e), 504)
    except RemoteError as e:
        return Outcome("FAILED", None, str(e), 500)
    except FlashError as e:
        return Outcome("FAILED", None, str(e), 500)
    try:
        value = to_json(result)
        del result  # held once from here: as its value, its JSON text, then its JSON bytes
        text = results.json_text(value)
        if len(text) > results.INLINE_BYTES:
            value = None  # large: only its bytes are kept, and sent as they are
        encoded = results.utf8(text)
        del text
    except Exception as e:
        return Outcome("FAILED", None, f"the result cannot be sent as JSON: {e}", 500)
    size = len(encoded.data)
    reason = results.too_large(size, max_result)
    if reason is not None:
        return Outcome("FAILED", None, reason, 507)
    output = value if size <= results.INLINE_BYTES else encoded
    return Outcome("COMPLETED", output, None, 200, encoded)
