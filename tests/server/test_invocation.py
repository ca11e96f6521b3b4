"""A queue route's body read in one pass (``JsonBodyRoute``) answers what FastAPI's own reading
answers for the same body: the same 422 details, the same values in the call."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from pydantic import BaseModel, create_model

from openflash.server.invocation import JsonBodyRoute, arguments, input_model


class Item(BaseModel):
    name: str
    qty: int


@dataclasses.dataclass
class Point:
    x: float
    y: float


def fn(count: int, item: Item, points: list[Point], note: str | None = None, extra: Any = None):
    """The kinds of parameters a queue route validates: plain, a model, dataclasses, optional."""


def _client() -> TestClient:
    model = input_model(fn, "fn_input")
    request_model = create_model("fn_request", input=(model, ...), webhook=(str | None, None))
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, exc: RequestValidationError) -> Any:
        from fastapi.responses import JSONResponse

        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    async def answer(body: Any) -> Any:
        from fastapi.responses import JSONResponse

        kwargs = arguments(body.input)
        shown = {k: repr(v) for k, v in kwargs.items()}
        return JSONResponse({"args": shown, "webhook": body.webhook})

    for path, route_class in (("/fastapi", None), ("/one-pass", JsonBodyRoute)):
        handler = _with_body(answer, request_model)
        app.router.add_api_route(path, handler, methods=["POST"], route_class_override=route_class)
    return TestClient(app)


def _with_body(answer: Any, request_model: type[BaseModel]) -> Any:
    import inspect

    async def handler(body: Any) -> Any:
        return await answer(body)

    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=request_model)]
    )
    return handler


GOOD = {
    "input": {
        "count": "3",
        "item": {"name": "a", "qty": 2},
        "points": [{"x": 1, "y": 2.5}],
        "extra": {"any": [1, "two"]},
    },
    "webhook": None,
}


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": {"count": 1, "item": {"name": "a", "qty": 1}, "points": []}}',
        __import__("json").dumps(GOOD).encode(),
        b'{"input": {"count": 1, "item": {"name": "a", "qty": "many"}, "points": []}}',
        b'{"input": {}}',
        b"{}",
        b"",
        b"[1, 2]",
        b'"text"',
        b"{not json",
        b'{"input": {"count": 1}',
        b'{"input": {"count": 1, "item": null, "points": [{"x": "left"}]}, "webhook": 5}',
    ],
)
def test_one_pass_answers_as_fastapi_does(body: bytes) -> None:
    client = _client()
    headers = {"content-type": "application/json"}
    theirs = client.post("/fastapi", content=body, headers=headers)
    ours = client.post("/one-pass", content=body, headers=headers)
    assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())


def test_one_pass_gives_the_call_the_declared_types() -> None:
    client = _client()
    answer = client.post("/one-pass", json=GOOD).json()["args"]
    assert answer["count"] == "3" and answer["item"] == "Item(name='a', qty=2)"
    assert answer["points"] == "[Point(x=1.0, y=2.5)]"
    assert answer["extra"] == "{'any': [1, 'two']}" and answer["note"] == "None"


def test_the_schema_still_shows_the_request_model() -> None:
    schema = _client().app.openapi()  # type: ignore[attr-defined]
    for path in ("/fastapi", "/one-pass"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"].endswith("/fn_request")
