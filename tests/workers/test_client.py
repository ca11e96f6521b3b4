"""The light client on its own: what a worker's project modules get from runpod_flash."""

from __future__ import annotations

import asyncio
import os

import pytest

from openflash.errors import FlashError
from openflash.workers import channel as nested
from openflash.workers import client, protocol


def test_decorating_names_the_file_and_qualified_name() -> None:
    api = client.Endpoint(name="pipe", cpu="cpu3c-1-2", workers=(0, 2))

    @api.post("/run")
    async def run(text: str) -> dict: ...

    @client.remote(client.CpuLiveServerless(name="cpu"), dependencies=["six"])
    def stage() -> None: ...

    @client.Endpoint(name="model")
    class Model: ...

    here = os.path.realpath(__file__)
    assert isinstance(run, client.RemoteFunction) and api.routes[0][:2] == ("POST", "/run")
    assert (run._file, run._qualname) == (here, run.__wrapped__.__qualname__)
    assert isinstance(stage, client.RemoteFunction) and stage.__name__ == "stage"
    assert isinstance(Model, client.RemoteClass)
    assert client.remote(local=True)(len) is len


def test_a_call_without_a_channel_says_where_nested_calls_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nested, "_channel", None)  # a Ray actor: no way back to the parent
    handle = client.reference("/p/stages.py", "infer", "infer()")
    with pytest.raises(FlashError, match=r"infer\(\) was called inside a worker that cannot"):
        asyncio.run(handle(1))


def test_a_call_goes_out_as_a_nested_frame_and_its_reply_comes_back() -> None:
    async def scenario() -> tuple[protocol.Frame, object, object]:
        sent: list[bytes] = []

        async def send(frame: bytes) -> None:
            sent.append(frame)

        channel = nested.open_channel(send)
        nested.current_call.set(7)
        handle = client.reference("/p/stages.py", "infer", "infer()")
        task = asyncio.ensure_future(handle(2, k=3))
        await asyncio.sleep(0)
        kind, nested_id, _ = protocol.HEADER.unpack(sent[0][: protocol.HEADER.size])
        request = protocol.decode_nested(sent[0][protocol.HEADER.size :])
        frame = protocol.Frame(kind, nested_id, b"")
        channel.resolve(
            nested_id, protocol.dumps(tuple(protocol.NestedReply(True, protocol.dumps(5))))
        )
        result = await task
        error = FlashError("inner call timed out", hint="raise it")
        failing = asyncio.ensure_future(handle())
        await asyncio.sleep(0)
        _, second_id, _ = protocol.HEADER.unpack(sent[1][: protocol.HEADER.size])
        reply = protocol.NestedReply(False, protocol.dumps(error), "flash")
        channel.resolve(second_id, protocol.dumps(tuple(reply)))
        with pytest.raises(FlashError, match="inner call timed out") as caught:
            await failing
        return frame, (request, result), caught.value.hint

    try:
        frame, (request, result), hint = asyncio.run(scenario())
    finally:
        nested._channel = None
    assert frame.kind == protocol.NESTED
    assert (request.file, request.qualname, request.outer, request.op) == (
        "/p/stages.py",
        "infer",
        7,
        protocol.OP_FUNCTION,
    )
    assert result == 5 and hint == "raise it"
