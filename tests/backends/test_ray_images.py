"""Images on Ray: an endpoint with a ``dockerImage`` runs its workers as podman containers on a
node of a real local cluster, the image derived there with the endpoint's lock (the images are
built with mmdebstrap by test_containers.py's fixture: no registry is reachable here)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_containers import IMAGE, MARKER, containers, images  # noqa: F401 (a fixture)
from test_ray import Cluster, running_cluster, shared_caches

import openflash
from openflash import CpuServerlessEndpoint, remote
from openflash.runtime import process

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, uv_cache: Path, apt_dir: Path
) -> Iterator[Cluster]:
    nodes = {"head": ["--num-cpus=2"], "node2": ["--num-cpus=2"]}
    with running_cluster(tmp_path_factory, "ri", nodes, shared_caches(uv_cache, apt_dir)) as c:
        yield c


@pytest.mark.usefixtures("images", "flash_home")
def test_an_image_endpoint_runs_in_containers_on_the_nodes(cluster: Cluster) -> None:
    openflash.configure(backend="ray", address=cluster.address)
    try:

        @remote(CpuServerlessEndpoint(name="ray-image-plain", dockerImage=IMAGE))
        def where() -> dict:
            import os
            import sys

            return {
                "marker": open("/etc/openflash-test").read().strip(),
                "python": sys.executable,
                "ray": os.path.exists("/usr/lib/python3/dist-packages/ray"),
            }

        @remote(
            CpuServerlessEndpoint(name="ray-image-six", dockerImage=IMAGE),
            dependencies=["six==1.16.0"],
        )
        def six_version() -> dict:
            import sys

            import six

            return {"six": six.__version__, "prefix": sys.prefix}

        async def scenario() -> list[dict]:
            return list(await asyncio.gather(where(), six_version()))

        plain, six = asyncio.run(scenario())
        assert plain == {"marker": MARKER, "python": "/usr/bin/python3", "ray": False}
        # dependencies=[...]: the image derived on the node, holding the lock (/opt/flash/env).
        assert six == {"six": "1.16.0", "prefix": "/opt/flash/env"}
        import ray

        addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
        for endpoint in (where.endpoint, six_version.endpoint):
            stats = process.get_runtime().pool_stats(endpoint)
            assert stats is not None and stats["detail"][0]["node"] in addresses, stats
        assert containers("ray-image-plain") and containers("ray-image-six")
    finally:
        process._overrides.clear()
        process.shutdown()
    # The workers' containers go with them.
    deadline = asyncio.run(_until_gone(["ray-image-plain", "ray-image-six"]))
    assert deadline, subprocess.run(["podman", "ps", "-a"], capture_output=True, text=True).stdout


async def _until_gone(endpoints: list[str]) -> bool:
    for _ in range(60):
        if not any(containers(e) for e in endpoints):
            return True
        await asyncio.sleep(0.5)
    return False
