"""Client mode against a real `flash run`: `Endpoint(id=...)` and `Endpoint(url=...)`, the job
they return, each endpoint's `/health` in Runpod's shape, both route forms Runpod Flash has
(`@remote(LiveLoadBalancer(...), method=, path=)`, `local=True`), and the real runpod SDK
(`runpod.Endpoint`) pointed at the server through `runpod.endpoint_url_base`.

Runpod's cloud cannot exist here: the server these clients call is a `flash run` on a free port of
this machine, which serves Runpod's serverless routes (/run, /runsync, /status, /cancel, /health)
at `/v2/{endpoint name}`, as Runpod's API serves them at `https://api.runpod.ai/v2/{id}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openflash import Endpoint, EndpointJob, FlashError

from helpers import FlashServer, free_port, run_python, write

ECHO = """
from runpod_flash import CpuInstanceType, Endpoint


@Endpoint(name="echo", cpu=CpuInstanceType.CPU3C_1_2, workers=1)
async def echo(text: str) -> dict:
    return {"echo": text}
"""

SLOW = """
import asyncio

from runpod_flash import Endpoint


@Endpoint(name="slow", cpu="cpu3c-1-2", workers=1)
async def nap(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "rested"


@Endpoint(name="fails", cpu="cpu3c-1-2")
def boom(x: int) -> int:
    raise RuntimeError(f"no luck with {x}")
"""

ROUTES = """
import os

from runpod_flash import CpuLiveLoadBalancer, Endpoint, remote

api = Endpoint(name="api", cpu="cpu3c-1-2")


@api.post("/shout")
async def shout(text: str) -> dict:
    return {"shout": text.upper(), "pid": os.getpid()}


@api.get("/where", local=True)
def where() -> dict:
    return {"pid": os.getpid()}


@remote(CpuLiveLoadBalancer(name="legacy"), method="POST", path="/add")
async def add(a: int, b: int) -> dict:
    return {"sum": a + b, "pid": os.getpid()}
"""


MIXED = """
from runpod_flash import Endpoint

api = Endpoint(name="mixed-api", cpu="cpu3c-1-2")


@api.get("/health")
async def health() -> dict:
    return {"status": "mine"}


@Endpoint(name="mixed-queue", cpu="cpu3c-1-2")
async def work(n: int) -> int:
    return n + 1
"""


COUNTER = """
from runpod_flash import Endpoint


@Endpoint(name="counter", cpu="cpu3c-1-2")
async def count(n: int):
    for i in range(n):
        yield i
"""

CALLER = """
from runpod_flash import Endpoint


@Endpoint(name="caller", cpu="cpu3c-1-2", env={{"FLASH_SERVER_URL": "{url}"}})
async def relay(text: str) -> dict:
    job = await Endpoint(id="echo").runsync({{"text": text}})
    return {{"relayed": job.output, "status": await job.status()}}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, session_home: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[FlashServer]:
    project = tmp_path_factory.mktemp("clients") / "clients"
    write(project / "echo.py", ECHO)
    write(project / "slow.py", SLOW)
    write(project / "routes.py", ROUTES)
    write(project / "mixed.py", MIXED)
    write(project / "counter.py", COUNTER)
    port = free_port()
    write(project / "caller.py", CALLER.format(url=f"http://127.0.0.1:{port}"))
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    with FlashServer(project, "--no-reload", port=port, env=env) as running:
        yield running


@pytest.fixture
def at(server: FlashServer, monkeypatch: pytest.MonkeyPatch) -> FlashServer:
    """Endpoint(id=...) finds the server through FLASH_SERVER_URL."""
    monkeypatch.setenv("FLASH_SERVER_URL", server.url)
    return server


def run(awaitable: Any) -> Any:
    """Await in a fresh event loop (a route call is awaitable, not a coroutine, as Runpod's)."""

    async def main() -> Any:
        return await awaitable

    return asyncio.run(main())


def test_endpoint_by_id_runs_jobs_and_answers_health(at: FlashServer) -> None:
    echo = Endpoint(id="echo")
    job = run(echo.runsync({"text": "now"}))
    assert isinstance(job, EndpointJob) and job.done
    assert job.output == {"echo": "now"} and job.error is None
    # A runsync call's answer stays at /status/{id} a while, as on Runpod (a minute).
    assert run(echo.status(job.id)).output == {"echo": "now"}

    async def submit_and_wait() -> tuple[EndpointJob, str, str]:
        job = await echo.run({"text": "later"})
        submitted = repr(job)
        await job.wait(timeout=120)
        return job, submitted, await job.status()

    job, submitted, status = run(submit_and_wait())
    assert "status='IN_QUEUE'" in submitted and job.id in submitted
    assert status == "COMPLETED" and job.output == {"echo": "later"}
    again = run(echo.status(job.id))  # the same job, asked by its id
    assert again.id == job.id and again.output == {"echo": "later"}

    health = run(echo.health())
    assert health["jobs"] == {
        "completed": 2,
        "failed": 0,
        "inProgress": 0,
        "inQueue": 0,
        "retried": 0,
    }
    # workers=1: its one worker stays (idleTimeout 60 s), ready and idle.
    assert health["workers"] == {
        "idle": 1,
        "initializing": 0,
        "ready": 1,
        "running": 0,
        "throttled": 0,
        "unhealthy": 0,
    }
    # The same health at the file's own route, where Runpod's dev server has the function.
    assert httpx.get(f"{at.url}/echo/health").json() == health


def test_a_failing_job_is_a_failed_endpoint_job_and_counted(at: FlashServer) -> None:
    fails = Endpoint(id="fails")
    job = run(fails.runsync({"x": 3}))
    assert job.done and job.output is None
    assert "RuntimeError: no luck with 3" in (job.error or "")
    assert run(fails.health())["jobs"]["failed"] == 1


def test_a_failed_job_is_retried_under_its_id(at: FlashServer) -> None:
    fails = Endpoint(id="fails")

    async def scenario() -> tuple[EndpointJob, httpx.Response, EndpointJob, httpx.Response]:
        job = await fails.run({"x": 7})
        await job.wait(timeout=120)
        async with httpx.AsyncClient(base_url=at.url) as http:
            retried = await http.post(f"/v2/fails/retry/{job.id}")
            again = await fails.status(job.id)
            await again.wait(timeout=120)
            done = await fails.runsync({"x": 1})
            return job, retried, again, await http.post(f"/v2/fails/retry/{done.id}")

    job, retried, again, unknown = run(scenario())
    assert job.error is not None and "no luck with 7" in job.error
    assert retried.status_code == 200 and retried.json() == {"id": job.id, "status": "IN_QUEUE"}
    assert again.id == job.id and again.done and "no luck with 7" in (again.error or "")
    assert unknown.status_code == 404  # a runsync call is no job of the journal's
    assert run(fails.health())["jobs"]["retried"] == 1


def test_queued_jobs_running_workers_cancel_and_purge(at: FlashServer) -> None:
    slow = Endpoint(id="slow")  # workers=1: a second job waits for the first one's worker

    async def scenario() -> tuple[dict[str, Any], str, dict[str, Any], str, str]:
        first = await slow.run({"seconds": 600})
        for _ in range(600):  # wait (no timing asserted) until its worker runs it
            health = await slow.health()
            if health["workers"]["running"] == 1:
                break
            await asyncio.sleep(0.2)
        second = await slow.run({"seconds": 1})
        for _ in range(600):  # until the server has handed it to the pool, where it waits
            busy = await slow.health()
            if busy["jobs"]["inQueue"] == 1 and await second.status() == "IN_QUEUE":
                break
            await asyncio.sleep(0.2)
        purged = await slow.purge_queue()
        cancelled = await slow.cancel(first.id)
        return busy, await second.status(), purged, await first.status(), cancelled._data["status"]

    busy, second, purged, first, answered = run(scenario())
    # As on Runpod: IN_QUEUE until a worker takes the job, IN_PROGRESS while it runs.
    assert busy["jobs"]["inProgress"] == 1 and busy["jobs"]["inQueue"] == 1
    assert busy["workers"]["running"] == 1 and busy["workers"]["idle"] == 0
    assert purged == {"removed": 1, "status": "completed"} and second == "CANCELLED"
    assert first == "CANCELLED" and answered == "CANCELLED"
    assert run(slow.health())["jobs"]["inProgress"] == 0


def test_endpoint_by_url_and_load_balanced_routes(at: FlashServer) -> None:
    by_url = Endpoint(url=f"{at.url}/echo")  # a flash run route's base, as any Runpod URL
    assert run(by_url.runsync({"text": "u"})).output == {"echo": "u"}
    api = Endpoint(id="api")
    answer = run(api.post("/shout", {"text": "hey"}))
    assert answer["shout"] == "HEY"
    assert answer["pid"] != at.proc.pid  # type: ignore[union-attr]  # on a worker


def test_route_forms_remote_with_path_and_local(at: FlashServer) -> None:
    # @remote(CpuLiveLoadBalancer(...), method="POST", path="/add"): served at the file's path
    # and by the endpoint's name, run on the endpoint's worker.
    r = httpx.post(f"{at.url}/routes/add", json={"a": 2, "b": 3}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["sum"] == 5 and r.json()["pid"] != at.proc.pid  # type: ignore[union-attr]
    assert run(Endpoint(id="legacy").post("/add", {"a": 1, "b": 1}))["sum"] == 2
    # @api.get("/where", local=True): the handler runs in the server's own process.
    where = httpx.get(f"{at.url}/routes/where", timeout=60).json()
    assert where == {"pid": at.proc.pid}  # type: ignore[union-attr]


def test_a_route_of_the_users_own_wins_over_a_generated_health(at: FlashServer) -> None:
    # mixed.py's only queue function is at /mixed/runsync, so its health would be /mixed/health,
    # where the file's load-balanced endpoint has a route of its own: that route answers.
    assert httpx.get(f"{at.url}/mixed/health", timeout=60).json() == {"status": "mine"}
    assert httpx.post(f"{at.url}/mixed/runsync", json={"input": {"n": 1}}).json()["output"] == 2
    assert set(run(Endpoint(id="mixed-queue").health())) == {"jobs", "workers"}


def test_a_function_in_a_worker_calls_another_endpoint_by_id(at: FlashServer) -> None:
    # Inside the worker, Endpoint is the light client's; the endpoint's env says where flash
    # run is. The echo endpoint's health shows the call.
    before = run(Endpoint(id="echo").health())["jobs"]["completed"]
    r = httpx.post(f"{at.url}/caller/runsync", json={"input": {"text": "via"}}, timeout=120)
    assert r.json().get("output") == {"relayed": {"echo": "via"}, "status": "COMPLETED"}, r.text
    assert run(Endpoint(id="echo").health())["jobs"]["completed"] == before + 1


def test_client_errors_name_the_endpoint_and_say_what_to_do(
    at: FlashServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FlashError) as missing:
        run(Endpoint(id="nope").runsync({}))
    assert f"Endpoint(id='nope'): POST {at.url}/v2/nope/runsync answered 404" in str(missing.value)
    assert "id= is the Endpoint(name=...) of a function in the served project" in str(missing.value)
    with pytest.raises(FlashError) as invalid:
        run(Endpoint(id="echo").runsync({"wrong": 1}))
    assert "answered 422" in str(invalid.value) and "parameters" in str(invalid.value)
    assert "text: Field required" in str(invalid.value)  # which field the server refused
    monkeypatch.setenv("FLASH_SERVER_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(FlashError) as down:
        run(Endpoint(id="echo").health())
    assert "cannot reach" in str(down.value)
    assert "start `flash run` in the project that serves it, or set FLASH_SERVER_URL" in str(
        down.value
    )
    with pytest.raises(FlashError, match="is a client of an endpoint served elsewhere"):

        @Endpoint(id="echo")
        async def mine() -> None: ...


SDK_SCRIPT = """
import json
import sys

import runpod

runpod.api_key = "unused on loopback"  # the SDK refuses to start without one
runpod.endpoint_url_base = sys.argv[1]
endpoint = runpod.Endpoint(sys.argv[2])
before = endpoint.health()
job = endpoint.run({"text": "queued"})
output = job.output(timeout=120)
status = job.status()
sync = endpoint.run_sync({"text": "sync"}, timeout=120)
after = endpoint.health()
streamed = list(runpod.Endpoint("counter").run({"n": 3}).stream())
print(json.dumps({"before": before, "status": status, "output": output, "sync": sync,
                  "after": after, "streamed": streamed}))
"""


@pytest.mark.slow
def test_the_runpod_sdk_calls_flash_run(
    server: FlashServer, tmp_path: Path, uv_cache: Path
) -> None:
    """The real runpod SDK (PyPI's `runpod`, in a venv of its own) against flash run."""
    venv = tmp_path / "sdk"
    uv = [sys.executable, "-m", "uv"]
    env = {**os.environ, "UV_CACHE_DIR": str(uv_cache)}
    subprocess.run([*uv, "venv", "-q", str(venv)], check=True, env=env, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [*uv, "pip", "install", "-q", "--python", str(python), "runpod"],
        check=True,
        env=env,
        timeout=600,
    )
    script = write(tmp_path / "sdk_client.py", SDK_SCRIPT)
    for base, name in ((f"{server.url}/v2", "echo"), (server.url, "echo")):
        done = subprocess.run(
            [str(python), str(script), base, name], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert seen["status"] == "COMPLETED" and seen["output"] == {"echo": "queued"}
        assert seen["sync"] == {"echo": "sync"}
        assert set(seen["before"]) == {"jobs", "workers"}
        done_before = seen["before"]["jobs"]["completed"]
        assert seen["after"]["jobs"]["completed"] == done_before + 2
        assert seen["streamed"] == [0, 1, 2]  # a generator's items through job.stream()


SCRIPT = """
import asyncio
import os

from runpod_flash import CpuLiveLoadBalancer, remote


@remote(CpuLiveLoadBalancer(name="script-routes"), method="POST", path="/add")
async def add(a: int, b: int) -> dict:
    return {"sum": a + b, "pid": os.getpid()}


if __name__ == "__main__":
    result = asyncio.run(add(2, 5))
    print(result["sum"], result["pid"] != os.getpid())
"""


def test_a_remote_route_awaited_from_python_runs_on_a_worker(
    tmp_path: Path, session_home: Path, uv_cache: Path
) -> None:
    script = write(tmp_path / "routes_script.py", SCRIPT)
    env = {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    done = run_python(script, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "7 True"  # the sum, made in another process: a worker
