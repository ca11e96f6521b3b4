"""What every request passes before a route: the API key, JSON bodies only, a size cap.

An ASGI middleware (no per-request objects beyond the body it must count):

- with an API key, every path but ``/health`` needs ``Authorization: Bearer <key>``, compared
  in constant time (401 otherwise);
- with an allow-list of host names (a key-less server on loopback), a request whose ``Host``
  header names another host, or that has no ``Host`` header (HTTP/1.0 allows that), is a 400
  saying how to allow it (DNS rebinding from a browser);
- a request body must be JSON (415 otherwise) and at most ``max_body`` bytes (413), whether or
  not it announces its length;
- and nested at most ``MAX_DEPTH`` arrays or objects deep (400): deeper values cannot be sent
  to a worker (pickling recurses once per level), so they are refused before any call.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_BODY",
    "MAX_DEPTH",
    "Refusal",
    "SecurityMiddleware",
    "nesting_depth",
]

DEFAULT_MAX_BODY = 10 * 1024 * 1024
#: How deep a request body's arrays and objects may nest (pickling fails near 500 levels).
MAX_DEPTH = 200
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
OPEN_PATHS = frozenset({"/health"})
#: The request headers read here, by their names as bytes (ASGI servers send them lower-case).
_READ = {n.encode(): n for n in ("host", "authorization", "content-length", "content-type")}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body: int = DEFAULT_MAX_BODY,
        allowed_hosts: frozenset[str] | None = None,
    ):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        screened = await self.screen(scope, receive)
        if isinstance(screened, Refusal):
            await send(screened.start())
            await send(screened.body())
        elif screened is None:
            await self.app(scope, receive, send)
        else:
            await self.app(scope, _replay(screened, receive), send)

    async def screen(self, scope: Scope, receive: Receive) -> Refusal | bytes | None:
        """The checks on an HTTP request: a ``Refusal`` to send, the request's body (read here),
        or None where its body is left unread (GET, HEAD, OPTIONS, or a length of 0).
        server/fast_path.py calls it for the routes it answers itself."""
        headers: dict[str, bytes] = {}  # the four headers read here; a repeated one: its last
        for key, value in scope.get("headers", ()):
            name = _READ.get(key) or _READ.get(key.lower())
            if name is not None:
                headers[name] = value
        if self.allowed_hosts is not None:
            if "host" not in headers:  # HTTP/1.0 may omit it; that must not skip the list
                return Refusal(
                    400,
                    "a Host header is required by this server (it serves without an API key, on "
                    "loopback only, and answers only to the host names it allows); send "
                    "'Host: localhost', or set FLASH_API_KEY",
                )
            name = _host_name(headers["host"].decode("latin-1"))
            if name not in self.allowed_hosts:
                return Refusal(
                    400,
                    f"Host {name!r} is not one this server answers to (it serves without an API "
                    f"key, on loopback only); to allow it, set FLASH_ALLOWED_HOSTS={name} (a "
                    "comma-separated list), or set FLASH_API_KEY",
                )
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get("authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.api_key):
                return Refusal(
                    401,
                    "a valid 'Authorization: Bearer <key>' header is required",
                    ((b"www-authenticate", b"Bearer"),),
                )
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return Refusal(400, f"Content-Length {length!r} is not a number")
            if declared > self.max_body:
                return Refusal(413, self._too_large())
        if scope["method"] in ("GET", "HEAD", "OPTIONS") or length == b"0":
            return None
        body, too_large = await _read_body(receive, self.max_body)
        if too_large:
            return Refusal(413, self._too_large())
        content_type = headers.get("content-type", b"").split(b";")[0].strip().lower()
        if body and not (content_type == b"application/json" or content_type.endswith(b"+json")):
            shown = content_type.decode("latin-1") or "none"
            return Refusal(
                415, f"request bodies must be JSON (Content-Type: application/json), not {shown}"
            )
        # nesting deeper than MAX_DEPTH takes more than MAX_DEPTH bytes: a shorter body is not
        if len(body) > MAX_DEPTH and nesting_depth(body, MAX_DEPTH) > MAX_DEPTH:
            return Refusal(
                400,
                f"request body nests arrays or objects more than {MAX_DEPTH} levels deep; send "
                "flatter data (a list of items, not items inside items)",
            )
        return body

    def _too_large(self) -> str:
        return (
            f"request body is larger than {self.max_body} bytes (FLASH_MAX_BODY); send less "
            "data, or raise FLASH_MAX_BODY"
        )


def nesting_depth(body: bytes, limit: int) -> int:
    """How deep ``body``'s (JSON) arrays and objects nest, counted up to ``limit + 1``: its
    strings dropped (escaped quotes first), then only brackets kept, then the innermost pairs
    removed one level a pass. Each step runs in C: a few times faster than parsing the JSON."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    depth = 0
    while brackets and depth <= limit:
        # A placeholder, so that a pair freed by this pass ({[]} -> {}) waits for the next.
        fewer = brackets.replace(b"[]", b".").replace(b"{}", b".").replace(b".", b"")
        if fewer == brackets:  # unbalanced: not JSON, which the route will say
            break
        brackets, depth = fewer, depth + 1
    return depth


def _host_name(host: str) -> str:
    """The name in a ``Host`` header, lower-case and without its port (``[::1]`` keeps brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


@dataclass(frozen=True)
class Refusal:
    """A request refused before any route: its HTTP status, the error said (the JSON body
    ``{"error": ...}``) and any extra response headers."""

    status: int
    error: str
    extra: tuple[tuple[bytes, bytes], ...] = ()

    def payload(self) -> bytes:
        return json.dumps({"error": self.error}).encode()

    def start(self) -> Message:
        """The ASGI ``http.response.start`` message (``body`` is the one after it)."""
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.payload())).encode()),
            *self.extra,
        ]
        return {"type": "http.response.start", "status": self.status, "headers": headers}

    def body(self) -> Message:
        return {"type": "http.response.body", "body": self.payload()}
