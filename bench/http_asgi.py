"""The server's CPU per ``/runsync`` request, in one process, without HTTP: ``flash run``'s app
(``create_app``, its lifespan run) called as an ASGI app by 32 concurrent callers, each posting
``{"input": {"x": 1}}`` to ``/echo/runsync`` (bench/http.py's project: a trivial function on one
worker). What HTTP adds (uvicorn, h11, the sockets) is the same for every tree and left out, so
that a change to what the app does per request shows in a figure the machine's load moves less
than bench/http.py's. The log goes to stderr: send it to /dev/null as bench/http.py does.

``--without-call`` replaces the call to the worker by its value (``job_streams.collect``
answers ``{"x": 1}`` at once; its awaitable is closed unawaited): the figure is then what the
server does around the call (the security checks, validation, the record, the log line, the
metrics, the answer), a measurement aid and no result of the product.

Reproduce, alternating the trees:
``PYTHONPATH=TREE/src python -m bench.http_asgi [--without-call] [requests] 2>/dev/null``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.http import PROJECT

BODY = json.dumps({"input": {"x": 1}}).encode()
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/echo/runsync",
    "raw_path": b"/echo/runsync",
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "client": ("127.0.0.1", 5555),
    "server": ("127.0.0.1", 8000),
}


def main(requests: int, without_call: bool) -> None:
    from openflash.server import job_streams
    from openflash.server.app import create_app

    if without_call:

        async def answered(awaitable: Any) -> Any:
            awaitable.close()
            return {"x": 1}

        job_streams.collect = answered  # type: ignore[assignment]
    root = Path(tempfile.mkdtemp(prefix="http-asgi-"))
    (root / "echo.py").write_text(PROJECT)
    app = create_app(root)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def caller(count: int) -> None:
        for _ in range(count):
            await app(dict(SCOPE), receive, send)

    async def run() -> None:
        async with app.router.lifespan_context(app):
            await caller(2000)  # the worker started, the heap settled
            for round_ in range(3):
                sent.clear()
                per = requests // 32
                cpu, wall = time.process_time(), time.perf_counter()
                await asyncio.gather(*(caller(per) for _ in range(32)))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                assert sent[-1]["type"] == "http.response.body" and b"COMPLETED" in sent[-1]["body"]
                print(
                    f"round {round_ + 1}: {1e6 * cpu / (per * 32):.1f} us CPU per request, "
                    f"{per * 32 / wall:.0f} requests/s",
                    file=sys.__stdout__,
                    flush=True,
                )

    asyncio.run(run())


if __name__ == "__main__":
    args = sys.argv[1:]
    without = "--without-call" in args
    numbers = [int(a) for a in args if a.isdigit()]
    main(numbers[0] if numbers else 40000, without)
