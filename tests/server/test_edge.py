"""The edge's settings, the Host allow-list, and its protocol's writes on a real socket (the
real-server checks are in tests/reliability/test_http_edge.py)."""

from __future__ import annotations

import asyncio
import resource
import socket
from asyncio import selector_events
from collections.abc import Awaitable, Callable
from typing import Any
from unittest import mock

import httpx
import pytest
import uvicorn

from openflash.errors import ConfigError
from openflash.server.edge import (
    allowed_hosts,
    edge_settings,
    header_timeout_protocol,
    raise_fd_limit,
)
from openflash.server.security import SecurityMiddleware


def test_settings_default_and_bound_connections_by_the_fd_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("FLASH_HEADER_TIMEOUT_S", "FLASH_KEEP_ALIVE_S", "FLASH_MAX_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    settings = edge_settings(1024)
    assert (settings.header_timeout_s, settings.keep_alive_s, settings.max_connections) == (
        10.0,
        5,
        512,
    )
    assert edge_settings(1_000_000).max_connections == 8192
    monkeypatch.setenv("FLASH_HEADER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("FLASH_MAX_CONNECTIONS", "100")
    assert edge_settings(1024).header_timeout_s == 2.5
    assert edge_settings(1024).max_connections == 100


@pytest.mark.parametrize("value", ["soon", "0", "-3", "inf", "nan"])
def test_a_bad_setting_names_itself(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FLASH_HEADER_TIMEOUT_S", value)
    with pytest.raises(ConfigError, match=r"FLASH_HEADER_TIMEOUT_S='.*' is not a positive") as e:
        edge_settings(1024)
    assert "FLASH_HEADER_TIMEOUT_S=10" in e.value.hint


def test_the_fd_soft_limit_is_raised_to_the_hard_one() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    _soft, hard = before
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        raised = raise_fd_limit()
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if hard != resource.RLIM_INFINITY:
            assert raised == hard
        else:
            assert raised > 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_allowed_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASH_ALLOWED_HOSTS", raising=False)
    assert allowed_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "[::1]"}
    assert "[::1]" in (allowed_hosts("::1") or ()) and "127.0.0.2" in (
        allowed_hosts("127.0.0.2") or ()
    )
    monkeypatch.setenv("FLASH_ALLOWED_HOSTS", " Box.Local , dev.test,")
    names = allowed_hosts("127.0.0.1")
    assert names is not None and {"box.local", "dev.test"} <= names
    monkeypatch.setenv("FLASH_ALLOWED_HOSTS", "box.local,*")
    assert allowed_hosts("127.0.0.1") is None  # any name


async def _ok(scope: object, receive: object, send: object) -> None:
    from starlette.responses import PlainTextResponse

    await PlainTextResponse("ok")(scope, receive, send)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost", 200),
        ("LOCALHOST:8888", 200),
        ("127.0.0.1:1", 200),
        ("[::1]:8888", 200),
        ("[::1]", 200),
        ("evil.example", 400),
        ("evil.example:80", 400),
        ("localhost.evil.example", 400),
        ("[::2]:80", 400),
        ("::1", 400),
    ],
)
def test_the_host_allow_list(host: str, status: int) -> None:
    app = SecurityMiddleware(
        _ok, api_key=None, allowed_hosts=frozenset({"localhost", "127.0.0.1", "[::1]"})
    )

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/", headers={"Host": host})

    r = asyncio.run(get())
    assert r.status_code == status, (host, r.text)
    if status == 400:
        assert "FLASH_ALLOWED_HOSTS=" in r.json()["error"]


async def _serve_and_talk(talk: Callable[[int], Awaitable[None]], app: Any) -> list[bytes]:
    """Serve ``app`` with the edge's protocol on a real socket, run ``talk(port)``, and return
    what each write to a connection's socket transport carried (a spy on asyncio's own write:
    the data still goes out)."""
    writes: list[bytes] = []
    real_write = selector_events._SelectorSocketTransport.write

    def counting_write(transport: Any, data: Any) -> None:
        if transport.get_extra_info("sockname")[1] == port:
            writes.append(bytes(data))
        real_write(transport, data)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, http=header_timeout_protocol(10), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    with mock.patch.object(selector_events._SelectorSocketTransport, "write", counting_write):
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            await talk(port)
        finally:
            server.should_exit = True
            await serving
    return writes


async def _exchange(port: int, request: bytes, until: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = b""
    while until not in answer:
        chunk = await reader.read(65536)
        if not chunk:
            break
        answer += chunk
    writer.close()
    return answer


def test_a_response_head_and_body_leave_in_one_write() -> None:
    """uvicorn writes a response's head and body apart; the edge sends them in one write
    (keep-alive and Connection: close alike), whole and in order."""
    body = b'{"status":"COMPLETED","output":{"x":1}}'

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    answers: list[bytes] = []

    async def talk(port: int) -> None:
        for close in (b"", b"Connection: close\r\n"):
            request = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n" + close + b"\r\n"
            answers.append(await _exchange(port, request, body))

    writes = asyncio.run(_serve_and_talk(talk, app))
    assert len(answers) == 2 and all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
    assert all(a.endswith(b"\r\n\r\n" + body) for a in answers)
    assert len(writes) == 2, writes  # one per response
    assert [w.endswith(body) and w.startswith(b"HTTP/1.1 200") for w in writes] == [True, True]


def test_a_streamed_body_leaves_part_by_part() -> None:
    """A streamed response's parts are not held for the end: the client reads the first part
    while the handler still waits to send the second (it waits for that read)."""
    first_read = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await asyncio.wait_for(first_read.wait(), 30)
        await send({"type": "http.response.body", "body": b"data: two\n\n"})

    seen: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = b""
        while b"data: one" not in answer:
            answer += await asyncio.wait_for(reader.read(65536), 30)
        seen.append(answer)
        first_read.set()
        while b"data: two" not in answer:
            answer += await asyncio.wait_for(reader.read(65536), 30)
        seen.append(answer)
        writer.close()

    asyncio.run(_serve_and_talk(talk, app))
    assert b"data: two" not in seen[0] and seen[1].startswith(b"HTTP/1.1 200")


def test_a_large_body_is_sent_whole_and_not_held() -> None:
    """A body of a megabyte leaves at once after its head (no copy joins them), whole."""
    body = bytes(range(256)) * 4096

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    answers: list[bytes] = []

    async def talk(port: int) -> None:
        request = b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        answers.append(await _exchange(port, request, b"read to the close"))

    writes = asyncio.run(_serve_and_talk(talk, app))
    head, _, received = answers[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and received == body
    assert len(writes) == 2 and writes[0].startswith(b"HTTP/1.1 200") and writes[1] == body
