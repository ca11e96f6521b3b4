"""A one-node Ray cluster on loopback for the cases that compare against Ray."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import cases


def available() -> str | None:
    """None when Ray and virtualenv (which Ray's uv runtime env needs) import; else why not."""
    try:
        import ray  # noqa: F401
        import virtualenv  # noqa: F401
    except ImportError as e:
        return f"needs Ray and virtualenv: pip install -e '.[bench]' ({e})"
    return None


@contextmanager
def local_cluster(temp_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """Start a head node (2 CPUs, no dashboard) with ``env``; yield its address; stop it."""
    port = cases.free_port()
    ray_cli = shutil.which("ray") or "ray"
    env = {**env, "RAY_AUTH_MODE": "disabled"}
    subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=os.environ)
