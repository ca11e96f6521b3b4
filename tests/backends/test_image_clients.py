"""`Endpoint(image=...)` as a client (Runpod Flash's external-image mode): the image's own server
runs as a real podman container, and `await ep.post(path, data)`, `ep.get(path)` and queue calls
reach it.

No registry is reachable here (and a real serving image such as vLLM's is gigabytes), so the image
is a small one built here on the test image of test_containers.py: Python's standard library
serving a few routes on $PORT, as a load-balanced Runpod worker's server does.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_containers import IMAGE, images  # noqa: F401 (a fixture)

from openflash.envs.engine import find_engine

from helpers import run_python, write

SERVER_IMAGE = "localhost/openflash-test:image-server"

SERVER = """
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/ping":
            return self.answer(200, {"status": "healthy"})
        if self.path == "/v1/models":
            return self.answer(200, {"data": [{"id": "tiny"}], "greeting": os.environ.get("GREETING")})
        self.answer(404, {"error": "no route " + self.path})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        if self.path == "/v1/completions":
            return self.answer(200, {"text": body["prompt"][::-1]})
        if self.path == "/runsync":
            return self.answer(200, {"id": "job-1", "status": "COMPLETED", "output": body["input"]})
        self.answer(404, {"error": "no route " + self.path})


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

CLIENT = f"""
import asyncio

from runpod_flash import Endpoint

tiny = Endpoint(name="tiny-llm", image="{SERVER_IMAGE}", env={{"GREETING": "hello"}})


async def main():
    print((await tiny.get("/v1/models"))["greeting"])
    print((await tiny.post("/v1/completions", {{"prompt": "abc"}}))["text"])
    job = await tiny.runsync({{"n": 1}})
    print(job.id, job.output)
    try:
        await tiny.get("/missing")
    except Exception as e:
        print(type(e).__name__, str(e).splitlines()[0])


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def server_image(images: None, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    if subprocess.run(["podman", "image", "exists", SERVER_IMAGE]).returncode != 0:
        context = tmp_path_factory.mktemp("image-server")
        write(context / "server.py", SERVER)
        write(
            context / "Containerfile",
            f'FROM {IMAGE}\nCOPY server.py /server.py\nCMD ["python3", "/server.py"]\n',
        )
        find_engine(None).build(context, SERVER_IMAGE)
    return SERVER_IMAGE


def servers() -> list[str]:
    done = subprocess.run(
        ["podman", "ps", "--all", "-q", "--filter", "label=openflash.image-server=tiny-llm"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_an_image_client_calls_the_images_own_server(server_image: str, tmp_path: Path) -> None:
    script = write(tmp_path / "image_client.py", CLIENT)
    done = run_python(script, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["hello", "cba", "job-1 {'n': 1}"]
    assert lines[3].startswith("FlashError Endpoint(image='localhost/openflash-test:image-server')")
    assert "GET http://127.0.0.1:" in lines[3] and "/missing answered 404" in lines[3]
    assert servers() == []  # its container is removed when the process ends
