"""`flash run` for real: a uvicorn server process on a free port, real workers, real clients."""

from __future__ import annotations

import re
import shutil
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import FlashServer, chromium, free_port
from webdriver import dashboard_dom

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "served"


def copy_project(where: Path) -> Path:
    root = where / "served"
    shutil.copytree(FIXTURE, root)
    return root


def store_env(home: Path, uv_cache: Path, apt_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "FLASH_HOME": str(home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
        **extra,
    }


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, session_home: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[FlashServer]:
    project = copy_project(tmp_path_factory.mktemp("flash-run"))
    env = store_env(session_home, uv_cache, apt_dir, FLASH_MAX_BODY="100000")
    with FlashServer(project, "--no-reload", env=env) as running:
        yield running


def post(server: FlashServer, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kwargs)


def test_runsync_in_every_route_shape(server: FlashServer) -> None:
    r = post(server, "/cpu_worker/process/runsync", {"input": {"input_data": {"text": "a b c"}}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "COMPLETED" and re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert body["output"]["words"] == 3
    # The project's .env was loaded, and the endpoint's env passed GREETING on to its workers.
    assert body["output"]["greeting"] == "hello from .env"
    assert post(server, "/cpu_worker/add/runsync", {"input": {"a": 2}}).json()["output"] == 3
    assert post(server, "/single/runsync", {"input": {"text": "hi"}}).json()["output"] == "HI"
    assert post(server, "/single/shout/runsync", {"input": {"text": "yo"}}).json()["output"] == "YO"
    gpu = post(server, "/workers/gpu/endpoint/runsync", {"input": {"prompt": "p"}}).json()
    assert gpu["output"] == {"prompt": "p", "steps": 2}
    assert [
        post(server, "/models/Tally/bump/runsync", {"input": {"by": 2}}).json()["output"]
        for _ in range(2)
    ] == [2, 4]
    assert post(server, "/models/Tally/total/runsync", {"input": {}}).json()["output"] == 4
    # Runpod's URLs for class methods: no class segment, the same instance behind them.
    assert post(server, "/models/bump/runsync", {"input": {"by": 1}}).json()["output"] == 5
    assert post(server, "/models/total/runsync", {"input": {}}).json()["output"] == 5
    # A file whose only callable is a class method: /{file}/runsync, as a function's.
    r = post(server, "/greeter/runsync", {"input": {"name": "Ada"}})
    assert r.json()["output"] == "hello, Ada", r.text


def test_ignored_and_broken_files_are_not_served(server: FlashServer) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "/single/runsync" in paths and "/lb_api/compute" in paths
    assert not any("ignored" in p or "hidden" in p or "broken" in p for p in paths)
    assert "broken.py failed to import" in server.output()
    # A plain script beside the endpoints is not imported (it would exit), and is listed as such.
    assert "load_client" not in server.output()
    state = httpx.get(f"{server.url}/_flash/state").json()
    assert state["skipped"] == ["load_client.py"]
    assert [f["file"] for f in state["failures"]] == ["broken.py"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"input": {}}, 422, "input_data"),  # a missing parameter
        ({"input": {"input_data": "not a dict"}}, 422, "dict_type"),
        ({}, 422, "input"),
        ({"input": {"input_data": {}, "extra": 1}}, 200, "COMPLETED"),  # extra keys are ignored
    ],
)
def test_inputs_are_validated_against_the_signature(
    server: FlashServer, body: dict, status: int, fragment: str
) -> None:
    r = post(server, "/cpu_worker/process/runsync", body)
    assert r.status_code == status, r.text
    assert fragment in r.text


def test_bad_requests_are_4xx_never_500(server: FlashServer) -> None:
    url = f"{server.url}/cpu_worker/add/runsync"
    headers = {"content-type": "application/json"}
    assert httpx.post(url, content=b"{not json", headers=headers).status_code == 422
    assert httpx.post(url, content=b"[1, 2]", headers=headers).status_code == 422
    assert httpx.post(url, json={"input": {"a": "two"}}).status_code == 422
    r = httpx.post(
        url, content=b"a=1", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 415 and "must be JSON" in r.json()["error"]
    big = {"input": {"a": 1, "pad": "x" * 200_000}}
    r = httpx.post(url, json=big)
    assert r.status_code == 413 and "FLASH_MAX_BODY" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap still holds
        yield b'{"input": {"a": 1, "pad": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"}}'

    r = httpx.post(url, content=chunks(), headers=headers)
    assert r.status_code == 413
    assert httpx.get(f"{server.url}/cpu_worker/add/status/nope").status_code == 404
    assert httpx.get(f"{server.url}/no/such/route").status_code == 404


def test_a_raising_function_and_a_timeout(server: FlashServer) -> None:
    r = post(server, "/cpu_worker/boom/runsync", {"input": {"message": "kaput"}})
    assert r.status_code == 500
    body = r.json()
    assert body["status"] == "FAILED" and "ValueError: boom: kaput" in body["error"]
    assert 'raise ValueError(f"boom: {message}")' in body["error"]  # the remote traceback
    r = post(server, "/cpu_worker/nap/runsync", {"input": {"seconds": 30}})
    assert r.status_code == 504
    assert r.json()["status"] == "TIMED_OUT" and "executionTimeoutMs=3000" in r.json()["error"]
    assert post(server, "/cpu_worker/nap/runsync", {"input": {"seconds": 0}}).json()["output"] == 0


def wait_status(
    server: FlashServer, base: str, job_id: str, want: set[str], timeout: float = 60
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{server.url}{base}/status/{job_id}", timeout=10).json()
        if body["status"] in want:
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {want}: {body}")


def test_async_jobs_run_status_and_cancel(server: FlashServer) -> None:
    base = "/cpu_worker/long_job"
    r = post(server, f"{base}/run", {"input": {"seconds": 0.2, "tag": "quick"}})
    assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE"
    done = wait_status(server, base, r.json()["id"], {"COMPLETED"})
    assert done["output"] == {"tag": "quick", "slept": 0.2}
    assert done["executionTime"] >= 200
    slow = post(server, f"{base}/run", {"input": {"seconds": 60, "tag": "slow"}}).json()
    wait_status(server, base, slow["id"], {"IN_PROGRESS"})
    cancelled = post(server, f"{base}/cancel/{slow['id']}").json()
    assert cancelled["status"] == "CANCELLED"
    assert httpx.get(f"{server.url}{base}/status/{slow['id']}").json()["status"] == "CANCELLED"
    assert httpx.get(f"{server.url}/cpu_worker/add/status/{slow['id']}").status_code == 404


def test_load_balanced_routes(server: FlashServer) -> None:
    url = f"{server.url}/lb_api"
    assert post(server, "/lb_api/compute", {"values": [1, 2, 3], "scale": 2}).json() == {
        "total": 12.0
    }
    assert httpx.get(f"{url}/items/5", params={"verbose": "true"}).json() == {
        "id": 5,
        "verbose": True,
    }
    assert httpx.put(f"{url}/items/5", json={"name": "n"}).json() == {"id": 5, "name": "n"}
    assert httpx.delete(f"{url}/items/5").json() == {"deleted": 5}
    assert httpx.patch(f"{url}/items/5", json={}).json() == {"id": 5, "patched": None}
    assert httpx.get(f"{url}/items/five").status_code == 422
    assert post(server, "/lb_api/compute", {"values": "nope"}).status_code == 422
    r = post(server, "/lb_api/fail", {"kind": "value"})
    assert r.status_code == 422 and "bad kind" in r.json()["detail"]
    r = post(server, "/lb_api/fail", {"kind": "other"})
    assert r.status_code == 500 and "RuntimeError: broken" in r.json()["detail"]


def test_an_endpoint_that_cannot_be_built_fails_its_calls_clearly(server: FlashServer) -> None:
    r = post(server, "/conflict/runsync", {"input": {}})
    assert r.status_code == 500 and r.json()["status"] == "FAILED"
    assert "cannot be installed together" in r.json()["error"]
    assert "endpoint 'served-conflict' cannot start" in server.output()  # told at start-up


def test_health_and_ping_do_not_touch_workers(server: FlashServer) -> None:
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/ping").json() == {"status": "healthy"}


def test_docs_render_offline_in_chromium(server: FlashServer, tmp_path: Path) -> None:
    dom = chromium(f"{server.url}/docs", tmp_path / "profile", "--dump-dom")
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert {
        "/single/runsync",
        "/cpu_worker/long_job/run",
        "/lb_api/compute",
        "/lb_api/items/{item_id}",
    } <= paths
    assert "swagger-ui" in dom and "/_flash/swagger/swagger-ui-bundle.js" in dom


def test_dashboard_renders_in_chromium(server: FlashServer, tmp_path: Path) -> None:
    post(server, "/single/runsync", {"input": {"text": "dashboard"}})
    shot = tmp_path / "dashboard.png"
    dom = dashboard_dom(f"{server.url}/", tmp_path / "profile", shot)
    assert 'data-loaded="true"' in dom
    cards = set(re.findall(r'class="card endpoint" data-endpoint="([^"]+)"', dom))
    assert {"served-cpu", "served-single", "served-gpu", "served-lb", "served-class"} <= cards
    if shutil.which("nvidia-smi") is None:  # its workers get no GPU here, started or not yet
        gpu_card = re.search(r'data-endpoint="served-gpu">.*?class="meta">([^<]*)<', dom, re.S)
        assert gpu_card and re.match(r"1 GPU asked, (will run|running) on the CPU", gpu_card[1]), (
            dom
        )
    assert re.search(r'data-endpoint="served-single">.*?badge ready', dom, re.S)
    assert re.search(r'class="worker (idle|busy)" data-pid="\d+"', dom)  # served-lb keeps 1 warm
    assert "/single/shout" in dom and "COMPLETED" in dom  # the recent call
    assert "broken.py failed to import" in dom
    # An endpoint whose dependencies conflict shows as failed, with uv's explanation.
    assert re.search(
        r'data-endpoint="served-conflict">.*?badge failed.*?requests==2\.32\.3 depends on urllib3',
        dom,
        re.S,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 900)
    assert len(data) > 20_000  # a page with content, not a blank one


def test_a_killed_server_loses_no_job(
    tmp_path: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    project = copy_project(tmp_path)
    env = store_env(session_home, uv_cache, apt_dir)
    first = FlashServer(project, "--no-reload", env=env).start()
    base = "/cpu_worker/long_job"
    finished = post(first, f"{base}/run", {"input": {"seconds": 0, "tag": "before"}}).json()["id"]
    wait_status(first, base, finished, {"COMPLETED"})
    in_flight = [
        post(first, f"{base}/run", {"input": {"seconds": 1.5, "tag": f"t{i}"}}).json()["id"]
        for i in range(6)
    ]
    time.sleep(0.3)
    first.kill()
    second = FlashServer(project, "--no-reload", port=first.port, env=env).start()
    try:
        assert "resumed 6 job(s)" in second.output()
        assert wait_status(second, base, finished, {"COMPLETED"})["output"]["tag"] == "before"
        for i, job_id in enumerate(in_flight):
            assert wait_status(second, base, job_id, {"COMPLETED"})["output"]["tag"] == f"t{i}"
    finally:
        second.stop()


def test_non_loopback_binds_need_an_api_key(
    tmp_path: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    project = copy_project(tmp_path)
    env = store_env(session_home, uv_cache, apt_dir)
    refused = FlashServer(project, "--no-reload", "--host", "0.0.0.0", env=env)
    with pytest.raises(RuntimeError, match=r"refusing to listen on 0\.0\.0\.0"):
        refused.start(timeout=60)
    assert refused.proc is not None and refused.proc.returncode == 2
    locked = FlashServer(
        project, "--no-reload", "--host", "0.0.0.0", env={**env, "FLASH_API_KEY": "s3cret"}
    ).start()
    try:
        url = f"{locked.url}/single/runsync"
        body = {"input": {"text": "x"}}
        assert httpx.get(f"{locked.url}/health").status_code == 200
        assert httpx.post(url, json=body).status_code == 401
        assert (
            httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert httpx.get(f"{locked.url}/docs").status_code == 401
        ok = httpx.post(url, json=body, headers={"Authorization": "Bearer s3cret"}, timeout=60)
        assert ok.status_code == 200 and ok.json()["output"] == "X"
    finally:
        locked.stop()


def test_a_taken_port_moves_to_the_next(
    tmp_path: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    project = copy_project(tmp_path)
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        server = FlashServer(
            project, "--no-reload", port=port, env=store_env(session_home, uv_cache, apt_dir)
        )
        server.port = port + 1  # where it should end up
        server.start()
        try:
            assert f"port {port} is taken; using {port + 1}" in server.output()
        finally:
            server.stop()


def test_hot_reload_keeps_unchanged_workers_warm(
    tmp_path: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    project = copy_project(tmp_path)
    with FlashServer(project, env=store_env(session_home, uv_cache, apt_dir)) as server:
        body = {"input": {"input_data": {"text": "warm"}}}
        pid = post(server, "/cpu_worker/process/runsync", body).json()["output"]["pid"]
        assert (
            post(server, "/cpu_worker/add/runsync", {"input": {"a": 2, "b": 3}}).json()["output"]
            == 5
        )
        source = project / "cpu_worker.py"
        source.write_text(source.read_text().replace("return a + b", "return a * b"))
        deadline = time.monotonic() + 30
        while (
            post(server, "/cpu_worker/add/runsync", {"input": {"a": 2, "b": 3}})
            .json()
            .get("output")
            != 6
        ):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        assert post(server, "/cpu_worker/process/runsync", body).json()["output"]["pid"] == pid
        (project / "extra.py").write_text(
            "from runpod_flash import CpuLiveServerless, remote\n\n"
            "@remote(CpuLiveServerless(name='served-extra'), dependencies=['six==1.17.0'])\n"
            "def six_version() -> str:\n    import six\n    return six.__version__\n"
        )
        deadline = time.monotonic() + 60
        while True:
            r = post(server, "/extra/runsync", {"input": {}})
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.3)
        assert r.json()["output"] == "1.17.0"
        assert "changed: extra.py" in server.output() and "new: served-extra" in server.output()
