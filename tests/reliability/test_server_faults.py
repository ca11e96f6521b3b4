"""Many callers at once, a dev server killed with jobs in flight, and a long load run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from openflash.envs.store import Store

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]


def test_four_processes_times_25_first_calls_build_once(
    fresh_home: Path, tmp_path: Path, report: Report
) -> None:
    script = write(
        tmp_path / "burst.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="burst", workersMax=3),
                dependencies=["six==1.16.0", "idna==3.7"])
        async def which(i: int) -> str:
            import six
            return f"{i}:{six.__version__}"

        async def main():
            print("\\n".join(await asyncio.gather(*(which(i) for i in range(25)))))

        asyncio.run(main())
        """,
    )
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    took = time.monotonic() - started
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        results += out.split()
    assert sorted(results) == sorted(f"{i}:1.16.0" for i in range(25) for _ in range(4))
    builds = [e for e in Store(fresh_home).events() if e["kind"] == "envs"]
    assert len(builds) == 1, builds
    report(
        "concurrency",
        "4 processes x 25 concurrent first calls to one new environment",
        f"exactly one build; 100 of 100 results in {took:.1f} s",
    )


def _served_project(where: Path) -> Path:
    project = where / "project"
    write(
        project / "jobs.py",
        """
        import asyncio
        from openflash import Endpoint

        @Endpoint(name="jobs", workers=(0, 4))
        async def job(n: int, seconds: float) -> dict:
            await asyncio.sleep(seconds)
            return {"n": n}
        """,
    )
    for i in range(4):
        write(
            project / f"load{i}.py",
            f"""
            from openflash import Endpoint

            @Endpoint(name="load{i}", workers=(1, 1), max_concurrency=32)
            async def echo(x: int) -> dict:
                return {{"x": x, "endpoint": {i}}}
            """,
        )
    return project


def test_a_killed_server_reports_every_job_after_restart(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _served_project(tmp_path)
    env = {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    first = FlashServer(project, "--no-reload", env=env).start()
    with httpx.Client(base_url=first.url, timeout=30) as client:
        ids = [
            client.post("/jobs/job/run", json={"input": {"n": n, "seconds": 0.2}}).json()["id"]
            for n in range(100)
        ]
    time.sleep(0.3)  # some done, four running, the rest queued
    first.kill()
    second = FlashServer(project, "--no-reload", port=first.port, env=env).start()
    try:
        statuses: dict[str, dict] = {}
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=second.url, timeout=30) as client:
            while time.monotonic() < deadline and len(statuses) < len(ids):
                for job_id in ids:
                    if job_id in statuses:
                        continue
                    body = client.get(f"/jobs/job/status/{job_id}").json()
                    if body["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
                        statuses[job_id] = body
                time.sleep(0.2)
        missing = [job_id for job_id in ids if job_id not in statuses]
        assert not missing, f"{len(missing)} jobs never reported an end: {missing[:5]}"
        completed = [i for i, job_id in enumerate(ids) if statuses[job_id]["status"] == "COMPLETED"]
        for i in completed:
            assert statuses[ids[i]]["output"] == {"n": i}
        failed = [statuses[j] for j in ids if statuses[j]["status"] != "COMPLETED"]
        assert all(f.get("error") for f in failed), failed[:3]
    finally:
        second.stop()
    report(
        "dev server",
        "SIGKILL to `flash run` with 100 async jobs queued or running, then a restart",
        f"all 100 jobs reported afterwards: {len(completed)} completed with their output, "
        f"{len(ids) - len(completed)} failed with a reason; none vanished",
    )


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_ten_thousand_calls_through_the_dev_server(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = _served_project(tmp_path)
    env = {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    total, concurrency, endpoints = 10_000, 64, 4
    with FlashServer(project, "--no-reload", env=env) as server:
        assert server.proc is not None
        memory: dict[int, int] = {}
        errors: list[str] = []
        answers = 0

        async def main() -> None:
            nonlocal answers
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(total):
                queue.put_nowait(n)
            limits = httpx.Limits(max_connections=concurrency)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
                for i in range(endpoints):  # workers up before the count starts
                    await client.post(f"/load{i}/echo/runsync", json={"input": {"x": -1}})

                async def caller() -> None:
                    nonlocal answers
                    while not queue.empty():
                        n = queue.get_nowait()
                        i = n % endpoints
                        try:
                            r = await client.post(
                                f"/load{i}/echo/runsync", json={"input": {"x": n}}
                            )
                            body = r.json()
                            if r.status_code != 200 or body.get("output") != {
                                "x": n,
                                "endpoint": i,
                            }:
                                errors.append(f"{n}: {r.status_code} {r.text[:200]}")
                        except httpx.HTTPError as e:
                            errors.append(f"{n}: {e!r}")
                        answers += 1
                        if answers in (1000, total):
                            memory[answers] = _rss(server.proc.pid)  # type: ignore[union-attr]

                await asyncio.gather(*(caller() for _ in range(concurrency)))

        started = time.monotonic()
        asyncio.run(main())
        took = time.monotonic() - started
    assert answers == total
    assert not errors, errors[:5]
    growth = memory[total] / memory[1000] - 1
    assert abs(growth) <= 0.10, f"server memory {memory[1000]} -> {memory[total]}"
    report(
        "load",
        f"{total:,} calls across {endpoints} endpoints, {concurrency} concurrent callers, "
        "through `flash run`",
        f"0 errors, 0 lost answers, {total / took:.0f} calls/s; server memory "
        f"{memory[1000] / 2**20:.0f} MiB after the first thousand, "
        f"{memory[total] / 2**20:.0f} MiB after the last ({growth:+.1%})",
    )
