"""The cluster package cache on a real local Ray cluster: two nodes, each with its own store, uv
cache and apt folder (nothing shared between them), build the same environment and system layer.
Their uv and apt really download, from PyPI and the Debian archive, through the driver's cache
(deps/package_cache.py): the cache's own records show that upstream was asked for each file
once, and that the other node's request was a hit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ray import Cluster, running_cluster

import openflash
from openflash import CpuInstanceType, Endpoint
from openflash.deps.package_cache import CacheRecord
from openflash.runtime import process

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def own_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    nodes = {"head": ["--num-cpus=2"], "node2": ["--num-cpus=2"]}
    # Empty: each node's uv cache and apt folder are its own, under its FLASH_HOME.
    env = {"FLASH_UV_CACHE_DIR": "", "FLASH_APT_DIR": ""}
    with running_cluster(tmp_path_factory, "rc", nodes, env) as cluster:
        yield cluster


def test_nodes_download_wheels_and_debs_through_the_cache_once(
    own_caches: Cluster, fresh_home: Path
) -> None:
    openflash.configure(backend="ray", address=own_caches.address)

    def versions() -> dict:
        import subprocess

        import six

        tree = subprocess.run(["tree", "--version"], capture_output=True, text=True, check=True)
        return {"six": six.__version__, "tree": tree.stdout.split()[1]}

    handles = [
        Endpoint(
            name=f"ray-cached-{i}",
            cpu=CpuInstanceType.CPU3C_1_2,
            dependencies=["six==1.16.0"],
            system_dependencies=["tree"],
        )(versions)
        for i in range(2)
    ]

    async def both() -> list[dict]:  # two workers at once: one on each node
        return list(await asyncio.gather(*(h() for h in handles)))

    try:
        results = asyncio.run(both())
        records = dict(process.get_runtime().backend._cache.records)  # type: ignore[attr-defined]
    finally:
        process._overrides.clear()
        process.shutdown()
    assert [r["six"] for r in results] == ["1.16.0", "1.16.0"]
    assert results[0]["tree"].startswith("v2")
    # Each node downloaded the .deb into its own apt folder, and the wheel into its uv cache.
    debs = {name: sorted(h.glob("apt/archives/tree_*.deb")) for name, h in own_caches.homes.items()}
    assert all(len(found) == 1 for found in debs.values()), debs
    (deb,) = debs["head"]
    wheel = "six-1.16.0-py2.py3-none-any.whl"
    assert records.get(CacheRecord("deb", deb.name, "fetched")) == 1, records
    assert records.get(CacheRecord("deb", deb.name, "hit")) == 1, records
    assert records.get(CacheRecord("wheel", wheel, "fetched")) == 1, records
    assert records.get(CacheRecord("wheel", wheel, "hit")) == 1, records
