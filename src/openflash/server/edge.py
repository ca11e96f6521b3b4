"""The HTTP edge of ``flash run``: what bounds connections before any request reaches the app.

- ``raise_fd_limit()`` lifts the process's soft open-file limit to its hard limit, so that
  thousands of connections do not exhaust the common default of 1024 (at which accepting stops
  and every new request hangs);
- ``HeaderTimeoutH11`` is uvicorn's h11 protocol with a header read timeout: a connection that
  has not sent a whole request head within ``header_timeout`` seconds of connecting (or of its
  previous response) is closed, so silent and half-open connections are let go of; and with
  a response's writes sent together: uvicorn writes a response's head and its body apart, each
  a ``send`` system call (on loopback, the costliest step of a small call), so they are held
  until the response is complete, the connection closes, ``HOLD_AT_MOST`` bytes are held or
  the loop's current step ends (a streamed body's parts still leave as they come);
- ``edge_settings()`` reads ``FLASH_HEADER_TIMEOUT_S``, ``FLASH_KEEP_ALIVE_S`` and
  ``FLASH_MAX_CONNECTIONS`` (uvicorn's ``limit_concurrency``: past it, a 503 at once);
- ``allowed_hosts()`` is the ``Host`` allow-list of a key-less server bound to loopback, which
  keeps a browser's DNS rebinding out (checked by security.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from openflash.errors import ConfigError

__all__ = [
    "EdgeSettings",
    "HeaderTimeoutH11",
    "allowed_hosts",
    "edge_settings",
    "header_timeout_protocol",
    "raise_fd_limit",
]

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_KEEP_ALIVE_S = 5
MAX_CONNECTIONS_CAP = 8192
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: The most a connection holds back for one write: past it, what is held leaves at once.
HOLD_AT_MOST = 64 * 1024


@dataclass(frozen=True)
class EdgeSettings:
    header_timeout_s: float
    keep_alive_s: int
    max_connections: int


def raise_fd_limit() -> int:
    """Set the soft open-file limit to the hard one (where allowed); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(OSError, ValueError):  # not allowed here: keep the soft limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def edge_settings(fd_limit: int) -> EdgeSettings:
    """The edge's settings from the environment; ``fd_limit`` bounds the default connections."""
    header = _number(
        "FLASH_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S, "FLASH_HEADER_TIMEOUT_S=10"
    )
    keep_alive = _number("FLASH_KEEP_ALIVE_S", DEFAULT_KEEP_ALIVE_S, "FLASH_KEEP_ALIVE_S=5")
    default_max = max(64, min(MAX_CONNECTIONS_CAP, fd_limit // 2))
    connections = _number("FLASH_MAX_CONNECTIONS", default_max, "FLASH_MAX_CONNECTIONS=4096")
    return EdgeSettings(header, max(1, round(keep_alive)), max(1, int(connections)))


def _number(name: str, default: float, example: str) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name}={text!r} is not a positive number", hint=f"e.g. {example}")
    return value


def allowed_hosts(bound_host: str) -> frozenset[str] | None:
    """Host names (no port) a key-less loopback server answers to: the loopback names, the
    bound address, and ``FLASH_ALLOWED_HOSTS`` (comma-separated); None for any (``*``)."""
    bound = bound_host.lower()
    names = {*LOOPBACK_NAMES, f"[{bound}]" if ":" in bound else bound}
    extra = os.environ.get("FLASH_ALLOWED_HOSTS", "")
    names.update(n.strip().lower() for n in extra.split(",") if n.strip())
    return None if "*" in names else frozenset(names)


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is late."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_due: float | None = None  # when the awaited head is late (loop time)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _Coalescing(transport, self.loop)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the whole head arrived
            self._disarm()

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()  # waiting for the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    # One timer a connection, not one a request: arming moves the due time, and a timer that
    # fires before it (the connection served requests meanwhile) waits on to the new one.
    def _arm(self) -> None:
        self._head_due = self.loop.time() + self.header_timeout
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_due, self._head_late)

    def _disarm(self) -> None:
        self._head_due = None

    def _head_late(self) -> None:
        self._head_timer = None
        due = self._head_due
        if due is None:
            return
        if self.loop.time() < due:
            self._head_timer = self.loop.call_at(due, self._head_late)
        elif self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class _Coalescing(asyncio.Transport):
    """A transport whose writes are joined and sent at ``flush``, or once the loop's current
    step ends; closing sends what is held first. The rest is the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport, self._loop = transport, loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: Any) -> None:
        if not data:
            return
        if self._transport.is_closing():
            self._transport.write(data)  # as the transport treats a write after close
            return
        if len(data) >= HOLD_AT_MOST:  # large: sent as it is (no copy), after what is held
            self.flush()
            self._transport.write(data)
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._held_bytes += len(self._held[-1])
        if self._held_bytes >= HOLD_AT_MOST:  # the transport's flow control sees it
            self.flush()

    def flush(self) -> None:
        """Send what is held, in one write."""
        if self._held:
            data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
            self._held.clear()
            self._held_bytes = 0
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutH11]:
    """A ``HeaderTimeoutH11`` with this timeout, for ``uvicorn.Config(http=...)``."""
    return type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout": seconds})
