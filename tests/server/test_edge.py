"""The edge's settings and the Host allow-list, without a server (the real-server checks are in
tests/reliability/test_http_edge.py)."""

from __future__ import annotations

import asyncio
import resource

import httpx
import pytest

from openflash.errors import ConfigError
from openflash.server.edge import allowed_hosts, edge_settings, raise_fd_limit
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
