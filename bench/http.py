"""HTTP throughput of ``flash run`` against a bare FastAPI app, in the same run.

Both servers are separate uvicorn processes on this machine; one client process drives each in
turn with 32 concurrent keep-alive connections, then with one (a single caller's round trip),
in raw HTTP/1.1 over asyncio so that the client costs little, posting the same runsync body.
The openflash route runs a trivial function on a worker; the bare app returns the same JSON from
the handler.

Each server's CPU time over the 32-client phase (the server's process and everything it started,
its worker included) is divided by the requests served: a figure the machine's other load moves
less than requests per second. ``before`` (a folder holding another openflash tree's package,
put first on PYTHONPATH) adds that tree's ``flash run`` as a third server, and ``rounds`` repeats
the three in turn, so that a change is measured against its parent under the same load.
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


def _tree_cpu(root: int) -> tuple[float, float]:
    """CPU seconds (user and system) of process ``root`` and of its live descendants (workers
    lead sessions of their own, so the tree is followed by parent pid)."""
    stats: dict[int, tuple[int, int]] = {}  # pid -> (parent, ticks)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # fields from the state on: state, ppid, ..., utime (11), stime (12)
        stats[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, others = {root}, 0
    grew = True
    while grew:
        grew = False
        for pid, (parent, ticks) in stats.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                others += ticks
                grew = True
    tick = os.sysconf("SC_CLK_TCK")
    return stats.get(root, (0, 0))[1] / tick, others / tick


async def _client(port: int, body: bytes, deadline: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST /echo/runsync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
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


def drive(
    port: int, *, clients: int = 32, seconds: float = 5.0, server: int | None = None
) -> dict[str, float]:
    """Requests per second and latencies for ``clients`` concurrent connections; with
    ``server`` (a pid), also the CPU milliseconds it and the processes it started (a
    worker) spent per request."""
    body = json.dumps({"input": {"x": 1}}).encode()
    cpu: list[tuple[float, float]] = []

    async def main() -> list[float]:
        warm: list[float] = []
        await asyncio.gather(
            *(_client(port, body, time.perf_counter() + 1.0, warm) for _ in range(clients))
        )
        latencies: list[float] = []
        cpu.append(_tree_cpu(server) if server else (0.0, 0.0))
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, body, deadline, latencies) for _ in range(clients)))
        cpu.append(_tree_cpu(server) if server else (0.0, 0.0))
        return latencies

    latencies = sorted(asyncio.run(main()))
    return {
        "rps": len(latencies) / seconds,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "n": len(latencies),
        "cpu_ms": 1000 * (cpu[1][0] - cpu[0][0]) / max(1, len(latencies)),
        "cpu_others_ms": 1000 * (cpu[1][1] - cpu[0][1]) / max(1, len(latencies)),
    }


def compare(
    bench_root: Path,
    env: dict[str, str],
    *,
    seconds: float = 5.0,
    before: Path | None = None,
    rounds: int = 1,
) -> dict[str, list[dict[str, float]]]:
    """Measure the openflash route and the bare app (and ``before``'s openflash), one after the
    other, ``rounds`` times: each server's results, one per round, with the load average."""
    root = Path(tempfile.mkdtemp(prefix="http-", dir=bench_root))
    (root / "project").mkdir()
    (root / "project" / "echo.py").write_text(PROJECT)
    (root / "bare").mkdir()
    (root / "bare" / "bare_app.py").write_text(BARE)
    results: dict[str, list[dict[str, float]]] = {}
    flash_port, bare_port = _free_port(), _free_port()
    servers: dict[str, tuple[list[str], int, dict[str, str]]] = {
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
            env,
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
            env,
        ),
    }
    if before is not None:
        argv, _, _ = servers["openflash"]
        paths = [str(before), *filter(None, [env.get("PYTHONPATH")])]
        servers["openflash (before)"] = (
            argv,
            flash_port,
            {**env, "PYTHONPATH": os.pathsep.join(paths)},
        )
    for _ in range(rounds):
        for name, (argv, port, server_env) in servers.items():
            results.setdefault(name, []).append(_measure(argv, port, server_env, seconds))
    return results


def _measure(argv: list[str], port: int, env: dict[str, str], seconds: float) -> dict[str, float]:
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(port)
        result = drive(port, seconds=seconds, server=proc.pid)
        single = drive(port, clients=1, seconds=seconds / 2)
        result.update(single_p50=single["p50"], single_p99=single["p99"], load=os.getloadavg()[0])
        return result
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
