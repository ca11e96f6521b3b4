"""The server of an image, for ``Endpoint(image=...)`` used as a client (Runpod Flash's "external
image" mode: ``vllm = Endpoint(name="vllm", image="vllm/vllm-openai:latest")``, then
``await vllm.post("/v1/completions", {...})``).

On Runpod's cloud the image is deployed as an endpoint and its own server answers. Here the
image runs as one container of the custom-images engine (podman or docker,
``FLASH_CONTAINER_ENGINE``; envs/engine.py), started at the endpoint's first call and removed
when this process exits. As on Runpod's load-balanced workers, the server is told its port in
``PORT`` and ``PORT_HEALTH`` (80 inside the container, published on a free port of 127.0.0.1),
gets the endpoint's ``env``, and is ready when ``GET /ping`` answers anything but 204
(initializing) or, for a server without ``/ping``, when it answers at all, within
``START_TIMEOUT_S``. Queue calls (``run``, ``runsync``, ``status``) go to the same address, so they
need an image whose server speaks Runpod's queue API (a ``flash run`` image made by ``flash
build`` does). One container per (image, env) per process, shared by every client of it.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from openflash import _subprocess
from openflash._settings import Settings
from openflash.envs.engine import Engine, NoEngineError, find_engine
from openflash.errors import FlashError
from openflash.workers.serverless_client import EndpointAddress

__all__ = ["CONTAINER_PORT", "START_TIMEOUT_S", "ImageServerKey", "image_server"]

#: The port the image's server is told to listen on (Runpod's default for load-balanced workers).
CONTAINER_PORT = 80
#: How long the server may take to answer after its container started.
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ImageServerKey:
    """What one image server is started for: the image (as written) and the env it gets."""

    image: str
    env: tuple[tuple[str, str], ...]


_servers: dict[ImageServerKey, EndpointAddress] = {}
_lock = threading.Lock()


async def image_server(
    name: str | None, image: str, env: Mapping[str, str] | None
) -> EndpointAddress:
    """The address of ``image``'s server, its container started (once) if need be."""
    key = ImageServerKey(image, tuple(sorted((env or {}).items())))
    return await asyncio.to_thread(_ensure, name, key)


def _ensure(name: str | None, key: ImageServerKey) -> EndpointAddress:
    with _lock:
        found = _servers.get(key)
        if found is None:
            found = _servers[key] = _start(name, key)
        return found


def _start(name: str | None, key: ImageServerKey) -> EndpointAddress:
    label = f"Endpoint(image={key.image!r})"
    settings = Settings.from_env()
    try:
        engine = find_engine(settings.container_engine)
    except NoEngineError as e:
        raise FlashError(
            f"{label} runs the image's server as a container, and no container engine was "
            f"found: {e.message}",
            hint="install podman (apt-get install podman) or docker, or set "
            "FLASH_CONTAINER_ENGINE to one",
        ) from None
    engine.image_id(key.image)  # pulled if missing; a clear error if it cannot be
    port = str(CONTAINER_PORT)
    options = ["-e", f"PORT={port}", "-e", f"PORT_HEALTH={port}"]
    for k, v in key.env:
        options += ["-e", f"{k}={v}"]
    started = _subprocess.run(
        [engine.path, "run", "-d", *engine.run_options(), "-p", f"127.0.0.1::{port}",
         "--label", f"openflash.image-server={name or key.image}", *options, key.image],
        timeout=120,
        hint=f"{label}: the engine could not start the image; its message is above",
    )  # fmt: skip
    container = started.stdout.strip().splitlines()[-1]
    atexit.register(_remove, engine, container)
    published = _subprocess.run([engine.path, "port", container, f"{port}/tcp"], timeout=30)
    host_port = published.stdout.strip().splitlines()[0].rsplit(":", 1)[-1]
    address = EndpointAddress(f"http://127.0.0.1:{host_port}", label, False)
    _wait_ready(engine, container, address)
    return address


def _wait_ready(engine: Engine, container: str, address: EndpointAddress) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{address.base}/ping", timeout=5) as response:
                if response.status != 204:  # 204: Runpod's "initializing"
                    return
        except urllib.error.HTTPError:
            return  # it answers: a server without /ping
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        state = _subprocess.run(
            [engine.path, "inspect", "--format", "{{.State.Running}}", container],
            check=False,
            timeout=30,
        )
        if state.stdout.strip() != "true":
            logs = _subprocess.run([engine.path, "logs", container], check=False, timeout=30)
            _remove(engine, container)
            raise FlashError(
                f"{address.label}: the image's server exited before it answered:\n"
                f"{_subprocess.tail(logs.stdout + logs.stderr)}",
                hint="the image must start an HTTP server on $PORT (its CMD or ENTRYPOINT)",
            )
        time.sleep(0.5)
    _remove(engine, container)
    raise FlashError(
        f"{address.label}: the image's server did not answer on $PORT ({CONTAINER_PORT}) within "
        f"{START_TIMEOUT_S:.0f} s",
        hint="the image must start an HTTP server listening on 0.0.0.0:$PORT",
    )


def _remove(engine: Engine, container: str) -> None:
    _subprocess.run([engine.path, "rm", "--force", container], check=False, timeout=60)
