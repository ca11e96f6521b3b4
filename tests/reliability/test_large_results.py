"""Large results under `flash run`, with real servers and workers: a result over
FLASH_MAX_RESULT_BYTES fails its job with the size, the cap and the setting (never a 500, never a
hang); one under a raised cap arrives whole through /runsync and /status; and once retention
removes its job, the journal's folder on disk comes back down to its size before the job."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def _project(where: Path) -> Path:
    project = where / "project"
    write(
        project / "big.py",
        """
        import base64
        import random
        from openflash import Endpoint

        @Endpoint(name="big", workers=(0, 1))
        def big(mib: float, seed: int = 1) -> str:
            raw = random.Random(seed).randbytes(int(mib * 2**20) // 4 * 3)
            return base64.b64encode(raw).decode()
        """,
    )
    return project


def _expected(mib: float, seed: int = 1) -> str:
    """What ``big(mib, seed)`` returns, made here."""
    return base64.b64encode(random.Random(seed).randbytes(int(mib * 2**20) // 4 * 3)).decode()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _env(session_home: Path, uv_cache: Path, **more: str) -> dict[str, str]:
    return {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache), **more}


def _ended(client: httpx.Client, job: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/big/status/{job}")
        assert answer.status_code == 200, answer.text[:300]
        body = answer.json()
        if body["status"] in ENDED:
            return body
        assert time.monotonic() < deadline, f"job {job} never ended: {body}"
        time.sleep(0.1)


def _on_disk(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk (the journal, its WAL, result files)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def test_a_result_over_the_cap_fails_its_job_naming_the_size_the_cap_and_the_setting(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _project(tmp_path)
    env = _env(session_home, uv_cache, FLASH_MAX_RESULT_BYTES="1M")
    size = (2 << 20) + 2  # the JSON of a 2 MiB str: the str in quotes
    with (
        FlashServer(project, "--no-reload", env=env) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        job = client.post("/big/run", json={"input": {"mib": 2}}).json()["id"]
        body = _ended(client, job)
        assert body["status"] == "FAILED", body
        for part in (f"{size} bytes", "FLASH_MAX_RESULT_BYTES=1048576", "raise FLASH_MAX_RESULT"):
            assert part in body["error"], body
        assert "output" not in body
        sync = client.post("/big/runsync", json={"input": {"mib": 2}})
        assert sync.status_code == 507, sync.text  # the server will not hold it; not a 500
        assert sync.json()["status"] == "FAILED" and f"{size} bytes" in sync.json()["error"]
        # Under the cap (and large enough to be sent as bytes): whole, and the endpoint fine.
        under = client.post("/big/runsync", json={"input": {"mib": 0.5, "seed": 2}})
        assert under.status_code == 200, under.text[:300]
        assert under.json() == {
            "id": under.json()["id"],
            "status": "COMPLETED",
            "output": _expected(0.5, 2),
        }
        assert list((project / ".flash" / "results").iterdir()) == []  # nothing kept of it
        log = server.output()
    assert "Traceback" not in log, log[-3000:]
    report(
        "dev server",
        "a function returning 2 MiB of JSON under `FLASH_MAX_RESULT_BYTES=1M`, through /run"
        " and /runsync",
        "the job FAILED with the result's size, the cap and the setting to raise (runsync:"
        " 507, not a 500); nothing of it was kept; a 0.5 MiB result next arrived whole",
    )


def test_a_large_result_arrives_whole_and_leaves_the_journal_with_its_job(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _project(tmp_path)
    mib = 64
    whole = _digest(json.dumps(_expected(mib)))
    flash = project / ".flash"
    keep = _env(
        session_home, uv_cache, FLASH_MAX_RESULT_BYTES="256M", FLASH_JOB_TTL="0",
        FLASH_RUNSYNC_KEEP_BYTES="128M",  # the 64 MiB runsync answer kept for /status
    )  # fmt: skip
    with (
        FlashServer(project, "--no-reload", env=keep) as server,
        httpx.Client(base_url=server.url, timeout=300) as client,
    ):
        client.post("/big/runsync", json={"input": {"mib": 0}})  # the worker started
        empty = _on_disk(flash)
        sync = client.post("/big/runsync", json={"input": {"mib": mib}})
        assert sync.status_code == 200 and sync.json()["status"] == "COMPLETED"
        assert _digest(json.dumps(sync.json()["output"])) == whole
        kept = client.get(f"/big/status/{sync.json()['id']}")  # a runsync answer, kept a minute
        assert _digest(json.dumps(kept.json()["output"])) == whole
        job = client.post("/big/run", json={"input": {"mib": mib}}).json()["id"]
        body = _ended(client, job)
        assert body["status"] == "COMPLETED", {k: v for k, v in body.items() if k != "output"}
        assert _digest(json.dumps(body["output"])) == whole
        stored = _on_disk(flash)
        # In a file of its own, not in the journal's pages.
        assert (flash / "results" / f"{job}.json").stat().st_size == (mib << 20) + 2
        assert (flash / "jobs.sqlite3").stat().st_size < 1 << 20
        detail = client.get(f"/_flash/calls/{job}").json()
        assert detail["output"]["cut"] is True and detail["output"]["bytes"] == (mib << 20) + 2
        again = client.post(f"/big/retry/{job}")  # a COMPLETED job is not run again
        assert again.status_code == 409 and again.json()["status"] == "COMPLETED"
        assert _digest(json.dumps(again.json()["output"])) == whole
    assert stored > empty + (mib << 20), (empty, stored)
    expire = _env(session_home, uv_cache, FLASH_JOB_TTL="1")
    with (
        FlashServer(project, "--no-reload", env=expire) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        deadline = time.monotonic() + 60
        while (gone := client.get(f"/big/status/{job}")).status_code != 404:
            assert time.monotonic() < deadline, "the job was never removed"
            time.sleep(0.2)
        assert gone.json()["status"] == "EXPIRED"
        after = _on_disk(flash)
    assert not (flash / "results" / f"{job}.json").exists()
    assert after < empty + (1 << 20), (empty, stored, after)
    report(
        "dev server",
        f"a {mib} MiB result under a raised `FLASH_MAX_RESULT_BYTES`, through /runsync, its"
        " kept /status, and /run then /status; then a restart with `FLASH_JOB_TTL=1`",
        "every answer whole (its SHA-256 checked), the job COMPLETED; the result kept in a file"
        f" of its own, not the journal's pages; once the job expired, `.flash/` took {after >> 10}"
        f" KiB on disk again (was {stored >> 20} MiB with the job, {empty >> 10} KiB before it)",
    )
