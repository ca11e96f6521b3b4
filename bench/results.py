"""A large result through ``flash run`` (issue 26): the server's peak RSS while a 200 MB result
goes from the worker to the HTTP client of ``/runsync``, and to the journal and the client of
``/status``; and the journal's size on disk before and after retention removes the job.

Each scenario runs on a ``flash run`` of its own (a fresh process, so that its ``VmHWM``, the
peak resident set read from ``/proc/<pid>/status``, is that scenario's), after one small call has
started the endpoint's worker. The function returns a str of ``--mb`` MiB (base64 of seeded
random bytes, so its JSON is as large as the str); the client streams each answer and checks its
SHA-256 against the same str made locally.

Reproduce: ``python -m bench.results [--mb 200] [--src PATH]``; ``--src`` is put first on the
server's ``PYTHONPATH`` (the tree to measure: a checkout's ``src``), the default is this tree's.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

PROJECT = textwrap.dedent(
    """
    import base64, random
    from openflash import Endpoint

    @Endpoint(name="big", workers=(1, 1))
    def big(mb: int, seed: int = 1) -> str:
        raw = random.Random(seed).randbytes((mb << 20) // 4 * 3)
        return base64.b64encode(raw).decode()
    """
)


def expected(mb: int, seed: int = 1) -> str:
    """The SHA-256 of ``big(mb, seed)``'s JSON output (a JSON string: the str in quotes)."""
    text = base64.b64encode(random.Random(seed).randbytes((mb << 20) // 4 * 3)).decode()
    return hashlib.sha256(json.dumps(text).encode()).hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_mib(pid: int) -> float:
    """``VmHWM`` of ``pid`` (its peak resident set so far), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def journal_mib(project: Path) -> float:
    """What ``.flash/`` holds on disk (the journal, its WAL, result files), in MiB."""
    folder = project / ".flash"
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()) / 2**20


def _output_digest(response: httpx.Response) -> tuple[str, str, int]:
    """The answer's status, its ``output``'s SHA-256 and the body's size: the body is cut at
    ``"output":`` and the JSON string's bytes that follow are hashed."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
    size = len(body)
    start = body.index(b'"output":') + len(b'"output":')
    end = body.index(b'"', start + 1) + 1  # a base64 str: no escaped quote inside
    head = json.loads(bytes(body[: start - len(b'"output":')]).rstrip(b",") + b"}")
    digest = hashlib.sha256(bytes(body[start:end])).hexdigest()
    del body
    return str(head.get("status")), digest, size


class Server:
    def __init__(self, root: Path, src: Path, env: dict[str, str]) -> None:
        self.project = Path(tempfile.mkdtemp(prefix="project-", dir=root))
        (self.project / "big.py").write_text(PROJECT)
        self.port = _free_port()
        path = os.pathsep.join(filter(None, (str(src), env.get("PYTHONPATH", ""))))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openflash", "run", str(self.project), "--port",
             str(self.port), "--no-reload"],
            env={**env, "PYTHONPATH": path},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("flash run did not start")
            time.sleep(0.2)
        warm = self.client.post("/big/runsync", json={"input": {"mb": 0}})
        assert warm.json()["status"] == "COMPLETED", warm.text

    def stop(self) -> None:
        self.client.close()
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)


def runsync(root: Path, src: Path, env: dict[str, str], mb: int) -> dict[str, Any]:
    server = Server(root, src, env)
    try:
        idle = peak_mib(server.proc.pid)
        started = time.perf_counter()
        with server.client.stream("POST", "/big/runsync", json={"input": {"mb": mb}}) as answer:
            status, digest, size = _output_digest(answer)
        seconds = time.perf_counter() - started
        return {
            "idle": idle, "peak": peak_mib(server.proc.pid), "status": status,
            "whole": digest == expected(mb), "bytes": size, "seconds": seconds,
        }  # fmt: skip
    finally:
        server.stop()


def run_and_status(root: Path, src: Path, env: dict[str, str], mb: int) -> dict[str, Any]:
    server = Server(root, src, env)
    try:
        idle = peak_mib(server.proc.pid)
        before = journal_mib(server.project)
        started = time.perf_counter()
        job = server.client.post("/big/run", json={"input": {"mb": mb}}).json()["id"]
        while True:  # small answers until it ends; then the body is the whole output
            with server.client.stream("GET", f"/big/status/{job}") as answer:
                status, digest, size = (
                    _output_digest(answer) if int(answer.headers["content-length"]) > 4096
                    else (json.loads(answer.read())["status"], "", 0)
                )  # fmt: skip
            if status not in ("IN_QUEUE", "IN_PROGRESS"):
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        peak = peak_mib(server.proc.pid)
        stored = journal_mib(server.project)
        while server.client.get(f"/big/status/{job}").status_code != 404:  # FLASH_JOB_TTL
            time.sleep(0.5)
        time.sleep(2)  # a checkpoint of the WAL after the removal, if the tree makes one
        return {
            "idle": idle, "peak": peak, "status": status, "whole": digest == expected(mb),
            "bytes": size, "seconds": seconds, "journal_before": before,
            "journal_stored": stored, "journal_after": journal_mib(server.project),
        }  # fmt: skip
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--ttl", type=float, default=15.0, help="FLASH_JOB_TTL of the run")
    args = parser.parse_args()
    env = {
        **os.environ,
        "FLASH_MAX_RESULT_BYTES": str(4 * args.mb << 20),  # a raised cap (a tree without: none)
        "FLASH_JOB_TTL": str(args.ttl),
        "FLASH_QUIET": "1",
    }
    with tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        root = Path(tmp)
        env.setdefault("FLASH_HOME", str(root / "home"))
        results = {
            "runsync": runsync(root, args.src, env, args.mb),
            "run+status": run_and_status(root, args.src, env, args.mb),
        }
    print(json.dumps({"src": str(args.src), "mb": args.mb, **results}, indent=2))


if __name__ == "__main__":
    main()
