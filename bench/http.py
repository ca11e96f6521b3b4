"""HTTP throughput of ``flash run`` against a bare FastAPI app, in the same run.

Both servers are separate uvicorn processes on this machine; one client process drives each in
turn with 32 concurrent keep-alive connections, then with one (a single caller's round trip),
in raw HTTP/1.1 over asyncio so that the client costs little, posting the same runsync body.
The openflash route runs a trivial function on a worker; the bare app returns the same JSON from
the handler.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PROJECT = textwrap.dedent(
    """
    from openflash import CpuInstanceType, Endpoint

    @Endpoint(name="bench-http", cpu=CpuInstanceType.CPU3C_2_4, workers=(1, 1), max_concurrency=32)
    async def echo(x: int) -> dict:
        return {"x": x}
    """
)

BARE = textwrap.dedent(
    """
    import uuid
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Input(BaseModel):
        x: int

    class Request(BaseModel):
        input: Input

    app = FastAPI()

    @app.post("/echo/runsync")
    async def runsync(body: Request) -> dict:
        return {"id": uuid.uuid4().hex, "status": "COMPLETED", "output": {"x": body.input.x}}
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no server on port {port}")


async def _client(port: int, body: bytes, deadline: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST /echo/runsync HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:80]!r}")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def drive(port: int, *, clients: int = 32, seconds: float = 5.0) -> dict[str, float]:
    """Requests per second and latencies for ``clients`` concurrent connections."""
    body = json.dumps({"input": {"x": 1}}).encode()

    async def main() -> list[float]:
        warm: list[float] = []
        await asyncio.gather(
            *(_client(port, body, time.perf_counter() + 1.0, warm) for _ in range(clients))
        )
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, body, deadline, latencies) for _ in range(clients)))
        return latencies

    latencies = sorted(asyncio.run(main()))
    return {
        "rps": len(latencies) / seconds,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "n": len(latencies),
    }


def compare(
    bench_root: Path, env: dict[str, str], *, seconds: float = 5.0
) -> dict[str, dict[str, float]]:
    """Measure the openflash route and the bare app, one after the other."""
    root = Path(tempfile.mkdtemp(prefix="http-", dir=bench_root))
    (root / "project").mkdir()
    (root / "project" / "echo.py").write_text(PROJECT)
    (root / "bare").mkdir()
    (root / "bare" / "bare_app.py").write_text(BARE)
    results = {}
    flash_port, bare_port = _free_port(), _free_port()
    servers = {
        "openflash": (
            [
                sys.executable,
                "-m",
                "openflash",
                "run",
                str(root / "project"),
                "--port",
                str(flash_port),
                "--no-reload",
            ],
            flash_port,
        ),
        "bare FastAPI": (
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare_app:app",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--app-dir",
                str(root / "bare"),
            ],
            bare_port,
        ),
    }
    for name, (argv, port) in servers.items():
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait(port)
            results[name] = drive(port, seconds=seconds)
            single = drive(port, clients=1, seconds=seconds / 2)
            results[name].update(single_p50=single["p50"], single_p99=single["p99"])
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    return results
