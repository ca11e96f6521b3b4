"""Endpoints calling endpoints: project code on workers, the light client, nested calls, deadlocks.

The pipeline project (tests/fixtures/apps/pipeline) has three files: a CPU stage with two
queue-style functions (six 1.16.0), an inference stage pinning six 1.17.0, and a pipeline whose
route calls all three from its worker. It runs through ``python pipeline.py`` and through a real
``flash run`` server, on real workers built by real uv.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import FlashServer, run_python, write

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "pipeline"


def store_env(home: Path, uv_cache: Path, apt_dir: Path) -> dict[str, str]:
    return {
        "FLASH_HOME": str(home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nested") / "pipeline"
    shutil.copytree(FIXTURE, root)
    return root


@pytest.fixture(scope="module")
def server(
    project: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[FlashServer]:
    env = store_env(session_home, uv_cache, apt_dir)
    with FlashServer(project, "--no-reload", env=env) as running:
        yield running


def check_stages(result: dict[str, Any], home: Path) -> None:
    """Each stage ran on its own endpoint's workers, in its own environment."""
    stages = result["stages"]
    assert result["text"] == "hello nested world"
    assert result["summary"] == "long: hello nested world"
    # The CPU stage's two functions share their endpoint's environment (six 1.16.0)...
    assert stages["preprocess"]["six"] == stages["postprocess"]["six"] == "1.16.0"
    assert stages["preprocess"]["prefix"] == stages["postprocess"]["prefix"]
    # ... the inference stage has its own (six 1.17.0), and the pipeline's has no six at all.
    assert stages["infer"]["six"] == "1.17.0"
    assert result["pipeline_six"] is None
    prefixes = {stages[s]["prefix"] for s in ("preprocess", "infer", "pipeline")}
    assert len(prefixes) == 3
    assert all(Path(p).parent == home / "envs" for p in prefixes)
    pids = {stages[s]["pid"] for s in ("preprocess", "infer", "pipeline")}
    assert len(pids) == 3 and os.getpid() not in pids
    # The route's worker imported runpod_flash without declaring it: the light client of the
    # worker runtime, outside the environment the user declared.
    client = Path(stages["pipeline"]["client"])
    assert client.is_relative_to(home / "runtime") and client.name == "__init__.py"
    assert not list(Path(stages["pipeline"]["prefix"]).rglob("runpod_flash"))


def test_python_pipeline_runs_each_stage_on_its_endpoint(
    project: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    env = store_env(session_home, uv_cache, apt_dir)
    done = run_python(project / "pipeline.py", "  Hello Nested World ", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    check_stages(json.loads(done.stdout.splitlines()[-1]), session_home)


def test_python_pipeline_reports_the_middle_stage_error(
    project: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    env = store_env(session_home, uv_cache, apt_dir)
    done = run_python(project / "pipeline.py", "boom", env=env, timeout=300)
    assert done.returncode == 1
    # The route's call fails with the inference stage's ValueError, its text and its place.
    first = next(line for line in done.stderr.splitlines() if line.startswith("openflash.errors"))
    # It is the original ValueError (except ValueError catches it), naming both calls.
    assert first == "openflash.errors.RemoteValueError: ValueError: the model cannot read 'boom'"
    assert (
        "(raised by infer() on endpoint 'nested-gpu')\n"
        "(raised by run() on endpoint 'nested-pipeline')\n"
    ) in done.stderr
    # Both tracebacks: where the stage raised, and where the pipeline awaited it.
    inner = done.stderr.index('File "' + str(project / "inference.py") + '", line')
    outer = done.stderr.rindex('File "' + str(project / "pipeline.py") + '", line')
    assert inner < done.stderr.index("The nested call above failed here:") < outer


def test_python_self_call_at_workers_max_fails_clearly(
    project: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    env = store_env(session_home, uv_cache, apt_dir)
    started = time.monotonic()
    done = run_python(project / "pipeline.py", "--recurse", env=env, timeout=120)
    assert time.monotonic() - started < 60  # well within the endpoint's 60 s timeout
    assert done.returncode == 1
    assert "DeadlockError" in done.stderr
    assert (
        "the nested call recurse() on endpoint 'nested-self' was failed: it could never run. "
        "All 1 worker(s) the endpoint may run (workersMax=1, max_concurrency=1) are busy"
    ) in done.stderr
    assert "Hint: raise workersMax (or max_concurrency)" in done.stderr


def post(server: FlashServer, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120)


def test_flash_run_route_calls_the_three_stages(server: FlashServer, session_home: Path) -> None:
    r = post(server, "/pipeline/run", {"text": "  Hello Nested World "})
    assert r.status_code == 200, r.text
    check_stages(r.json(), session_home)
    # The stages' workers stay warm for the next request.
    again = post(server, "/pipeline/run", {"text": "  Hello Nested World "}).json()
    assert again["stages"]["infer"]["pid"] == r.json()["stages"]["infer"]["pid"]


def test_flash_run_middle_stage_error_reaches_the_http_caller(server: FlashServer) -> None:
    r = post(server, "/pipeline/run", {"text": "boom"})
    # A route whose handler raises ValueError answers 422 (the input was refused): the stage's
    # ValueError stays one through the nested call.
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "ValueError: the model cannot read 'boom'" in detail
    assert "(raised by infer() on endpoint 'nested-gpu')" in detail


def test_flash_run_self_call_finishes_or_fails_clearly(server: FlashServer) -> None:
    assert post(server, "/pipeline/recurse/runsync", {"input": {"depth": 0}}).json()["output"] == 0
    started = time.monotonic()
    r = post(server, "/pipeline/recurse/runsync", {"input": {"depth": 1}})
    assert time.monotonic() - started < 60
    body = r.json()
    assert body["status"] == "FAILED"
    assert "DeadlockError" in body["error"] and "could never run" in body["error"]
    # The endpoint is not stuck: its one worker takes the next call.
    assert post(server, "/pipeline/recurse/runsync", {"input": {"depth": 0}}).json()["output"] == 0


TOOLS = '''
    """Inner calls that time out, crash, hold state or run from a thread, called from outer()."""

    import asyncio
    import os

    import openflash
    from runpod_flash import (
        CpuLiveServerless,
        ExecutionTimeoutError,
        GpuGroup,
        WorkerCrashedError,
        remote,
    )


    @remote(CpuLiveServerless(name="nested-slow", executionTimeoutMs=500))
    async def slow() -> None:
        await asyncio.sleep(30)


    @remote(CpuLiveServerless(name="nested-crash"))
    def crash() -> None:
        os._exit(3)


    @remote(CpuLiveServerless(name="nested-counter"))
    class Counter:
        def __init__(self, start: int) -> None:
            self.value = start

        def add(self, n: int) -> int:
            self.value += n
            return self.value


    @remote(CpuLiveServerless(name="nested-square"))
    def square(x: int) -> int:
        return x * x


    @remote(CpuLiveServerless(name="nested-outer"))
    async def outer() -> dict:
        seen = {}
        try:
            await slow()
        except ExecutionTimeoutError as e:
            seen["timeout"] = [type(e).__name__, "nested-slow" in str(e)]
        try:
            await crash()
        except WorkerCrashedError as e:
            seen["crash"] = [type(e).__name__, e.exit_code]
        counter = Counter(10)
        seen["counter"] = [await counter.add(1), await counter.add(5)]
        seen["thread"] = await asyncio.to_thread(threaded)
        seen["enum"] = GpuGroup.ADA_24.value
        seen["client"] = openflash.__file__
        return seen


    def threaded() -> int:
        # A plain function's own event loop, on another thread than the worker's.
        return asyncio.run(square(7))


    if __name__ == "__main__":
        import json

        print(json.dumps(asyncio.run(outer())))
'''


def test_inner_timeouts_crashes_instances_and_threads(
    tmp_path: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    script = write(tmp_path / "tools.py", TOOLS)
    done = run_python(script, env=store_env(session_home, uv_cache, apt_dir), timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    # The inner call's timeout and crash reach the outer function as the usual exceptions.
    assert seen["timeout"] == ["ExecutionTimeoutError", True]
    assert seen["crash"] == ["WorkerCrashedError", 3]
    # An instance made inside a worker keeps its state on the worker that holds it.
    assert seen["counter"] == [11, 16]
    assert seen["thread"] == 49
    assert seen["enum"] == "ADA_24"
    assert Path(seen["client"]).is_relative_to(session_home / "runtime")


def test_flash_run_reload_restarts_workers_that_import_a_changed_project_file(
    tmp_path: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    project = tmp_path / "reloading"
    write(project / "helpers.py", 'def tag() -> str:\n    return "v1"\n')
    write(
        project / "app.py",
        """
        from runpod_flash import CpuLiveServerless, remote

        from helpers import tag


        @remote(CpuLiveServerless(name="nested-reload"))
        def tagged() -> dict:
            import os

            return {"tag": tag(), "pid": os.getpid()}
        """,
    )
    with FlashServer(project, env=store_env(session_home, uv_cache, apt_dir)) as server:
        first = post(server, "/app/runsync", {"input": {}}).json()["output"]
        assert first["tag"] == "v1"
        # The worker imported helpers from the project's folder; a warm worker would keep v1.
        (project / "helpers.py").write_text('def tag() -> str:\n    return "v2"\n')
        deadline = time.monotonic() + 30
        while (now := post(server, "/app/runsync", {"input": {}}).json()["output"])["tag"] != "v2":
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.3)
        assert now["pid"] != first["pid"]
