"""Client mode: calling an endpoint that is already served, as Runpod Flash's ``Endpoint(id=...)``
and ``Endpoint(image=...)`` do, and ``EndpointJob``, the job such a call returns.

Runpod Flash addresses a deployed endpoint by its id: queue calls go to
``https://api.runpod.ai/v2/{id}/{run,runsync,status/{job},cancel/{job},health}``, HTTP calls to a
load-balanced endpoint's routes. Here the same calls go to a server that speaks Runpod's
serverless API:

- ``Endpoint(id="name")``: the endpoint of that name served by a ``flash run`` (``{server}/v2/
  {name}``, server/routes.py), where ``server`` is ``FLASH_SERVER_URL``, by default
  ``http://localhost:8888`` (``flash run``'s default; the port is FLASH_PORT where that is set,
  as ``flash run`` reads it too);
- ``Endpoint(url="https://...")``: any base URL of that API: a ``flash run`` route's base
  (``http://host:8888/{file}``), or Runpod's own (``https://api.runpod.ai/v2/{id}``).

Requests carry ``Authorization: Bearer <key>`` when ``FLASH_API_KEY`` or ``RUNPOD_API_KEY`` is set
(a ``flash run`` on loopback needs none). The methods are coroutines, as Runpod Flash's are; the
HTTP itself runs in a thread. Standard library only: this module is part of the worker runtime,
so a function can call an endpoint by id from inside a worker too.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

from openflash.errors import FlashError

__all__ = ["DEFAULT_SERVER_URL", "ClientCall", "ClientMode", "EndpointAddress", "EndpointJob"]

#: Where ``Endpoint(id=...)`` looks when FLASH_SERVER_URL is not set: ``flash run``'s default.
DEFAULT_SERVER_URL = "http://localhost:8888"
#: Job statuses after which a job does not change (Runpod's).
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
_FIRST_POLL_S, _POLL_FACTOR, _MAX_POLL_S = 0.2, 1.5, 3.0
#: Consecutive failures to reach the server that ``wait()`` rides out before raising.
_MAX_POLL_ERRORS = 5


class JobWaitTimeout(FlashError, TimeoutError):
    """``EndpointJob.wait(timeout=...)`` ran out before the job ended (Runpod raises
    TimeoutError there; this is one)."""

    hint = "wait longer, or check the job's status later with its id"


@dataclass(frozen=True)
class EndpointAddress:
    """Where a client endpoint's calls go: ``base`` for queue calls (``{base}/run``) and route
    calls (``{base}{path}``); ``label`` is how errors name it."""

    base: str
    label: str
    by_id: bool

    @classmethod
    def of(cls, *, id: str | None = None, url: str | None = None) -> EndpointAddress:
        if url is not None:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise FlashError(
                    f"Endpoint(url={url!r}) is not an http(s) URL",
                    hint="give the endpoint's base URL, e.g. url='http://localhost:8888/my_file' "
                    "(a flash run route) or 'https://api.runpod.ai/v2/<id>'",
                )
            return cls(url.rstrip("/"), f"Endpoint(url={url!r})", False)
        if not isinstance(id, str) or not id.strip() or "/" in id:
            raise FlashError(
                f"Endpoint(id={id!r}) is not an endpoint name",
                hint="id= is the name of an endpoint a flash run serves (Endpoint(name=...) in "
                "its project), e.g. Endpoint(id='my-worker')",
            )
        server = os.environ.get("FLASH_SERVER_URL") or _local_server()
        server = server.rstrip("/")
        return cls(f"{server}/v2/{urllib.parse.quote(id)}", f"Endpoint(id={id!r})", True)


def _local_server() -> str:
    """``flash run``'s address on this machine: its port is FLASH_PORT where that is set (as
    ``flash run`` reads it), 8888 otherwise."""
    port = os.environ.get("FLASH_PORT", "").strip()
    return f"http://localhost:{port}" if port.isdigit() else DEFAULT_SERVER_URL


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = os.environ.get("FLASH_API_KEY") or os.environ.get("RUNPOD_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _request(
    address: EndpointAddress, method: str, path: str, data: Any, timeout: float, queue: bool
) -> Any:
    """One HTTP request, its JSON answer decoded. A queue call's answer that names a job status
    (runsync's FAILED is a 500 on flash run) is returned as it is; any other failure raises."""
    url = f"{address.base}{path}"
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, method=method, headers=_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if queue and isinstance(answer, dict) and "status" in answer and e.code != 404:
            return answer
        raise _http_error(
            address, method, url, e.code, answer if answer is not None else text
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError) or isinstance(e, TimeoutError):
            raise FlashError(
                f"{address.label}: {method} {url} got no answer within {timeout} s",
                hint="pass a larger timeout=, or use run() and wait() for long jobs",
            ) from None
        where = (
            "start `flash run` in the project that serves it, or set FLASH_SERVER_URL to the "
            "server's address"
            if address.by_id
            else "check the URL, and that its server is running"
        )
        raise FlashError(f"{address.label}: cannot reach {url}: {reason}", hint=where) from None


def _http_error(
    address: EndpointAddress, method: str, url: str, code: int, answer: Any
) -> FlashError:
    detail = answer.get("error") or answer.get("detail") if isinstance(answer, dict) else answer
    if isinstance(answer, dict) and answer.get("error") and answer.get("detail"):
        detail = f"{answer['error']} ({_fields(answer['detail'])})"  # flash run's 422: which field
    message = f"{address.label}: {method} {url} answered {code}: {str(detail)[:500]}"
    if code == 401:
        hint = "set FLASH_API_KEY (or RUNPOD_API_KEY) to the server's key"
    elif code == 404 and address.by_id:
        hint = (
            "no endpoint of that name (or no such route) is served there: its /docs page lists "
            "the routes; id= is the Endpoint(name=...) of a function in the served project"
        )
    elif code == 404:
        hint = "check the URL and the path: the server's /docs page lists its routes"
    else:
        hint = "the answer above says what the server refused or what failed"
    error = FlashError(message, hint=hint)
    error.status_code = code  # type: ignore[attr-defined]
    return error


def _fields(detail: Any) -> str:
    """A validation error's entries (``[{"loc": [...], "msg": ...}]``) as ``loc: msg; ...``."""
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for entry in detail:
        if isinstance(entry, dict):
            where = ".".join(str(p) for p in entry.get("loc", ()) if p not in ("body", "input"))
            parts.append(f"{where or 'input'}: {entry.get('msg', entry)}")
        else:
            parts.append(str(entry))
    return "; ".join(parts)


async def _call(
    address: EndpointAddress,
    method: str,
    path: str,
    data: Any = None,
    timeout: float = 60.0,
    queue: bool = True,
) -> Any:
    return await asyncio.to_thread(_request, address, method, path, data, timeout, queue)


class EndpointJob:
    """A job submitted to a client endpoint (``await ep.run(...)``, ``await ep.runsync(...)``),
    as Runpod Flash's ``EndpointJob``: ``id``, ``output`` (COMPLETED), ``error`` (FAILED) and
    ``done`` read the job's last known state; ``await job.status()`` asks again and returns the
    status string (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT);
    ``await job.wait(timeout=None)`` polls until the job ends (raises ``JobWaitTimeout``, a
    TimeoutError, past ``timeout`` seconds); ``await job.cancel()`` cancels it."""

    def __init__(self, data: dict[str, Any], address: EndpointAddress) -> None:
        self._data = dict(data or {})
        self._address = address

    @property
    def id(self) -> str:
        return str(self._data.get("id", ""))

    @property
    def output(self) -> Any:
        return self._data.get("output")

    @property
    def error(self) -> str | None:
        error = self._data.get("error")
        return None if error is None else str(error)

    @property
    def done(self) -> bool:
        return self._data.get("status") in TERMINAL

    async def status(self) -> str:
        self._data = await _call(self._address, "GET", f"/status/{self.id}", timeout=30.0)
        return str(self._data.get("status", "UNKNOWN"))

    async def cancel(self) -> EndpointJob:
        self._data.update(await _call(self._address, "POST", f"/cancel/{self.id}"))
        return self

    async def wait(self, timeout: float | None = None) -> EndpointJob:
        deadline = None if timeout is None else time.monotonic() + timeout
        interval, errors = _FIRST_POLL_S, 0
        while not self.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise JobWaitTimeout(
                    f"job {self.id} did not end within {timeout} s (last status: "
                    f"{self._data.get('status', 'UNKNOWN')})"
                )
            await asyncio.sleep(interval if left is None else min(interval, left))
            try:
                await self.status()
                errors = 0
            except FlashError as e:
                if getattr(e, "status_code", None) is not None:
                    raise  # the server answered: a refusal, not a passing network failure
                errors += 1
                if errors >= _MAX_POLL_ERRORS:
                    raise
            interval = min(interval * _POLL_FACTOR, _MAX_POLL_S)
        return self

    def __repr__(self) -> str:
        return f"EndpointJob(id={self.id!r}, status={self._data.get('status', 'UNKNOWN')!r})"


class ClientCall:
    """What ``ep.get/post/put/delete/patch(path, data)`` returns on a client endpoint: await it
    for the route's JSON answer. Nothing is sent until it is awaited."""

    def __init__(
        self, start: Callable[[], Awaitable[Any]], method: str, path: str, label: str
    ) -> None:
        self._start, self.method, self.path, self._label = start, method, path, label

    def __await__(self) -> Generator[Any, None, Any]:
        return self._start().__await__()

    def __call__(self, fn: Any) -> Any:
        raise FlashError(
            f"{self._label} is a client of an endpoint served elsewhere: "
            f"@{self.method.lower()}({self.path!r}) cannot add a route to it",
            hint="routes belong to Endpoint(name=...) without id= or url=; to call this route, "
            f"await ep.{self.method.lower()}({self.path!r}, data)",
        )


class ClientMode:
    """Runpod Flash's client methods, for an endpoint with an ``address`` (id= or url=, or an
    image's server): queue calls, and HTTP calls to load-balanced routes. All are coroutines."""

    async def _address(self) -> EndpointAddress:
        raise NotImplementedError

    async def run(self, input_data: Any, *, webhook: str | None = None) -> EndpointJob:
        """Submit a job (``POST /run``); its ``EndpointJob`` is IN_QUEUE until it starts."""
        address = await self._address()
        payload: dict[str, Any] = {"input": input_data}
        if webhook is not None:
            payload["webhook"] = webhook
        return EndpointJob(await _call(address, "POST", "/run", payload), address)

    async def runsync(self, input_data: Any, timeout: float = 60.0) -> EndpointJob:
        """Run a job and wait for it (``POST /runsync``, up to ``timeout`` seconds)."""
        address = await self._address()
        data = await _call(address, "POST", "/runsync", {"input": input_data}, timeout)
        return EndpointJob(data, address)

    async def status(self, job_id: str) -> EndpointJob:
        """The job ``job_id`` as the server knows it now (``GET /status/{id}``)."""
        address = await self._address()
        return EndpointJob(await _call(address, "GET", f"/status/{job_id}"), address)

    async def cancel(self, job_id: str) -> EndpointJob:
        """Cancel the job ``job_id`` (``POST /cancel/{id}``)."""
        address = await self._address()
        return EndpointJob(await _call(address, "POST", f"/cancel/{job_id}"), address)

    async def health(self) -> dict[str, Any]:
        """Its jobs and workers by state (``GET /health``, Runpod's shape)."""
        answer: dict[str, Any] = await _call(await self._address(), "GET", "/health", queue=False)
        return answer

    async def purge_queue(self) -> dict[str, Any]:
        """Cancel its jobs that have not started (``POST /purge-queue``)."""
        address = await self._address()
        answer: dict[str, Any] = await _call(address, "POST", "/purge-queue", queue=False)
        return answer

    def _client_call(self, method: str, path: str, data: Any, kwargs: dict[str, Any]) -> ClientCall:
        timeout = float(kwargs.pop("timeout", 60.0))
        if kwargs:
            raise TypeError(f"{method.lower()}() got unexpected keyword arguments {sorted(kwargs)}")
        if not isinstance(path, str) or not path.startswith("/"):
            raise FlashError(f"route path {path!r} must start with '/'", hint="e.g. '/v1/models'")

        async def send() -> Any:
            return await _call(await self._address(), method, path, data, timeout, queue=False)

        return ClientCall(send, method, path, self._client_label())

    def _client_label(self) -> str:
        return "this endpoint"
