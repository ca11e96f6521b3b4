"""The HTTP edge of `flash run`: thousands of idle or half-open connections never starve real
requests, and a key-less server on loopback answers only to the host names it is reached by."""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]
IDLE = 2000

PROJECT = """
from openflash import Endpoint

@Endpoint(name="edge")
async def hello(name: str) -> str:
    return f"hello {name}"
"""


@contextlib.contextmanager
def _fd_soft_limit(soft: int) -> Iterator[None]:
    """Run the block (and the processes it starts) with this soft file-descriptor limit."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    write(project / "app.py", PROJECT)
    return project


def _env(session_home: Path, uv_cache: Path, **extra: str) -> dict[str, str]:
    return {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache), **extra}


def test_idle_and_half_open_connections_do_not_starve_requests(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE + 512:
        pytest.skip(f"the hard file-descriptor limit ({hard}) is below {IDLE + 512}")
    env = _env(session_home, uv_cache, FLASH_API_KEY="k3y", FLASH_HEADER_TIMEOUT_S="3")
    auth = {"Authorization": "Bearer k3y"}
    # the server starts with the common default soft limit (1024), as from a login shell
    with _fd_soft_limit(1024):
        server = FlashServer(_project(tmp_path), "--no-reload", env=env).start()
    idle: list[socket.socket] = []
    try:
        with _fd_soft_limit(hard):
            for i in range(IDLE):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                idle.append(sock)
                if i % 4 == 0:  # a quarter send half a request line and stop
                    sock.sendall(b"GET /heal")
                elif i % 100 == 1:  # and a few trickle a head, a byte at a time (slowloris)
                    sock.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
            with httpx.Client(timeout=30, headers=auth) as client:
                health = client.get(f"{server.url}/health")
                assert health.status_code == 200, health.text
                call = client.post(
                    f"{server.url}/app/hello/runsync", json={"input": {"name": "edge"}}
                )
                assert call.status_code == 200, call.text
                assert call.json()["output"] == "hello edge"
            # and the server lets go of them: each silent or half-open connection is closed
            slow = [sock for i, sock in enumerate(idle) if i % 100 == 1]
            closed = _wait_closed(idle, bound_s=60, trickle=slow)
            assert closed == IDLE, f"{IDLE - closed} of {IDLE} idle connections still open"
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    report(
        "HTTP",
        f"{IDLE} idle connections to `flash run` (started with a soft limit of 1024 open "
        "files), a quarter of them having sent half a request line and 20 trickling a header a "
        "byte at a time, then `/health` and a call",
        "both answered at once; every idle connection was closed by the server after "
        "`FLASH_HEADER_TIMEOUT_S=3`",
    )


def test_past_the_connection_cap_a_request_is_told_503_not_left_waiting(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    cap = 50
    env = _env(session_home, uv_cache, FLASH_MAX_CONNECTIONS=str(cap), FLASH_HEADER_TIMEOUT_S="3")
    idle: list[socket.socket] = []
    with FlashServer(_project(tmp_path), "--no-reload", env=env) as server:
        try:
            for _ in range(cap + 10):
                idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=30))
            # accepted in order: every idle connection is counted before this request is read
            with httpx.Client(timeout=30) as client:
                busy = client.get(f"{server.url}/health", headers={"Connection": "close"})
                assert busy.status_code == 503, busy.text
                assert _wait_closed(idle, bound_s=60) == len(idle)
                after = client.get(f"{server.url}/health")
                assert after.status_code == 200, after.text
        finally:
            for sock in idle:
                sock.close()
    report(
        "HTTP",
        f"{cap + 10} idle connections to `flash run` under `FLASH_MAX_CONNECTIONS={cap}`, "
        "then `/health`",
        "503 at once instead of a wait; after `FLASH_HEADER_TIMEOUT_S=3` closed the idle "
        "connections, `/health` answered 200",
    )


def _wait_closed(
    socks: list[socket.socket], bound_s: float, trickle: list[socket.socket] | None = None
) -> int:
    """How many of ``socks`` the server closed (EOF or reset) within ``bound_s`` (a hang guard),
    sending a byte to each of ``trickle`` still open every half second meanwhile."""
    import time

    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    open_slow = set(trickle or [])
    deadline = time.monotonic() + bound_s
    try:
        while closed < len(socks) and time.monotonic() < deadline:
            for sock in list(open_slow):
                try:
                    sock.send(b"x")
                except OSError:  # reset: the server closed it; select sees that too
                    open_slow.discard(sock)
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except ConnectionError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    open_slow.discard(sock)
                    closed += 1
    finally:
        selector.close()
    return closed


@pytest.fixture(scope="module")
def loopback_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("hosts"))


def test_a_keyless_loopback_server_refuses_foreign_host_names(
    loopback_project: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    body = {"input": {"name": "x"}}
    with FlashServer(loopback_project, "--no-reload", env=_env(session_home, uv_cache)) as server:
        url = f"{server.url}/app/hello/runsync"
        for host in ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "0x7f.1"]:
            refused = httpx.post(url, json=body, headers={"Host": host}, timeout=30)
            assert refused.status_code == 400, (host, refused.status_code, refused.text)
            assert "FLASH_ALLOWED_HOSTS" in refused.json()["error"], refused.text
        refused = httpx.get(f"{server.url}/", headers={"Host": "evil.example"}, timeout=30)
        assert refused.status_code == 400
        # an unfinished request head past h11's 16 KiB is refused, not buffered on
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"x" * 65536)
            assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
        for host in ["localhost", f"localhost:{server.port}", "127.0.0.1", f"[::1]:{server.port}"]:
            ok = httpx.post(url, json=body, headers={"Host": host}, timeout=60)
            assert ok.status_code == 200 and ok.json()["output"] == "hello x", (host, ok.text)
    allowed = _env(session_home, uv_cache, FLASH_ALLOWED_HOSTS="evil.example, other.example")
    with FlashServer(loopback_project, "--no-reload", env=allowed) as server:
        url = f"{server.url}/app/hello/runsync"
        ok = httpx.post(url, json=body, headers={"Host": "evil.example:8888"}, timeout=60)
        assert ok.status_code == 200 and ok.json()["output"] == "hello x", ok.text
        refused = httpx.post(url, json=body, headers={"Host": "third.example"}, timeout=30)
        assert refused.status_code == 400
    report(
        "security",
        "requests with `Host: evil.example` (DNS rebinding from a browser) to a key-less "
        "`flash run` on 127.0.0.1",
        "400 naming FLASH_ALLOWED_HOSTS; localhost, 127.0.0.1 and [::1] answered; with "
        "`FLASH_ALLOWED_HOSTS=evil.example` it answered",
    )


def _raw_http10(port: int, head: bytes, body: bytes = b"") -> bytes:
    """One HTTP/1.0 request written by hand (so no client adds a Host header); the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):  # HTTP/1.0: the server closes after its reply
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_request_without_host_does_not_bypass_the_allow_list(
    loopback_project: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    body = b'{"input": {"name": "x"}}'
    post = (
        b"POST /app/hello/runsync HTTP/1.0\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n" % len(body)
    )
    with FlashServer(loopback_project, "--no-reload", env=_env(session_home, uv_cache)) as server:
        for head, sent in [(b"GET /health HTTP/1.0\r\n\r\n", b""), (post + b"\r\n", body)]:
            reply = _raw_http10(server.port, head, sent)
            assert reply.startswith(b"HTTP/1.1 400 "), reply[:300]
            assert b"a Host header is required" in reply and b"FLASH_API_KEY" in reply, reply
        # the same requests with a loopback Host are answered: the refusal is the missing header
        reply = _raw_http10(server.port, b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
        reply = _raw_http10(server.port, post + b"Host: 127.0.0.1\r\n\r\n", body)
        assert reply.startswith(b"HTTP/1.1 200 ") and b"hello x" in reply, reply[:300]
    report(
        "security",
        "HTTP/1.0 requests with no `Host` header (a raw socket) to a key-less `flash run` on "
        "127.0.0.1, to `/health` and to a call",
        "400 saying a Host header is required (the allow-list is not skipped); the same "
        "requests with `Host: localhost` or `127.0.0.1` answered",
    )
