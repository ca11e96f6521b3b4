"""What each node of a real local Ray cluster does for its workers: two nodes, each with its own
store, uv cache and apt folder (nothing shared between them), and one volumes folder that both
mount (``FLASH_VOLUMES``, as a shared filesystem would be).

- The package cache: both nodes build the same environment and system layer, and their uv and
  apt really download, from PyPI and the Debian archive, through the driver's cache
  (deps/package_cache.py): the cache's own records show that upstream was asked for each file
  once, and that the other node's request was a hit.
- Workers run as locally: in a namespace with their system packages at their real paths, and
  forked from the node's template after the first.
- A volume on the shared folder: what one endpoint writes on one node, another reads on the
  other.
- On a node without namespaces (a one-node cluster with them turned off), layers are used
  relocated, and the driver says so.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ray import Cluster, running_cluster, shared_caches

import openflash
from openflash import CpuInstanceType, Endpoint
from openflash.deps.package_cache import CacheRecord
from openflash.runtime import process

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def shared_volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-volumes")


@pytest.fixture(scope="module")
def own_caches(tmp_path_factory: pytest.TempPathFactory, shared_volumes: Path) -> Iterator[Cluster]:
    nodes = {"head": ["--num-cpus=3"], "node2": ["--num-cpus=3"]}
    # Empty: each node's uv cache and apt folder are its own, under its FLASH_HOME.
    env = {"FLASH_UV_CACHE_DIR": "", "FLASH_APT_DIR": "", "FLASH_VOLUMES": str(shared_volumes)}
    with running_cluster(tmp_path_factory, "rc", nodes, env) as cluster:
        yield cluster


@pytest.fixture
def on_own_caches(own_caches: Cluster, fresh_home: Path) -> Iterator[Cluster]:
    openflash.configure(backend="ray", address=own_caches.address)
    try:
        yield own_caches
    finally:
        process._overrides.clear()
        process.shutdown()


def node_of(prefix: str, cluster: Cluster) -> str:
    """The node whose store holds the environment at ``prefix`` (a worker's sys.prefix)."""
    (name,) = [n for n, home in cluster.homes.items() if Path(prefix).is_relative_to(home)]
    return name


def test_nodes_download_wheels_and_debs_through_the_cache_once(on_own_caches: Cluster) -> None:
    own_caches = on_own_caches

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

    results = asyncio.run(both())
    records = dict(process.get_runtime().backend._cache.records)  # type: ignore[attr-defined]
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


def test_system_packages_are_at_their_real_paths_and_later_workers_fork(
    on_own_caches: Cluster,
) -> None:
    """A worker's parent is the template it was forked from (its node's, which runs in the
    namespace too), or, for the first on a node, the Ray actor that spawned it."""
    assert not Path("/usr/bin/tree").exists(), "this test needs a host without tree"

    @Endpoint(
        name="ray-forked",
        cpu=CpuInstanceType.CPU3C_1_2,
        system_dependencies=["tree"],
        workers=(0, 4),
    )
    async def where(seconds: float) -> dict:
        import asyncio
        import os
        import subprocess

        await asyncio.sleep(seconds)
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            parent = f.read().replace(b"\0", b" ").decode()
        # At its real path, as a program that names /usr/bin/tree would run it.
        tree = subprocess.run(["/usr/bin/tree", "--version"], capture_output=True, text=True)
        return {"tree": tree.stdout.split()[:1], "parent": parent, "pid": os.getpid()}

    async def scenario() -> tuple[dict, list[dict]]:
        first = await where(0)
        # More workers while the first is busy: up to four on two nodes, so that a node starts
        # a worker after its first.
        return first, list(await asyncio.gather(*(where(6) for _ in range(4))))

    first, later = asyncio.run(scenario())
    stats = process.get_runtime().pool_stats(where.endpoint)
    assert stats is not None
    started = [str(w["started"]) for w in stats["detail"]]  # what the dashboard shows
    assert any(s.startswith("forked from template") for s in started), started
    assert any(s.startswith("spawned") for s in started), started
    assert first["tree"] == ["tree"]  # the layer, overlaid in the worker's namespace
    assert "openflash.workers.forkserver" not in first["parent"]  # the first is spawned
    assert all(r["tree"] == ["tree"] for r in later), later
    forked = [r for r in later if "openflash.workers.forkserver" in r["parent"]]
    assert forked, later


def test_a_file_written_to_a_shared_volume_is_read_on_another_node(
    on_own_caches: Cluster, shared_volumes: Path
) -> None:
    @Endpoint(name="ray-volume-writer", cpu=CpuInstanceType.CPU3C_1_2, volume="ray-shared")
    def write(text: str) -> dict:
        import os

        folder = os.environ["FLASH_VOLUME_PATH"]
        with open(os.path.join(folder, "note.txt"), "w") as f:
            f.write(text)
        return {"folder": folder, "prefix": sys.prefix}

    @Endpoint(name="ray-volume-reader", cpu=CpuInstanceType.CPU3C_1_2, volume="ray-shared")
    def read() -> dict:
        import os
        from pathlib import Path

        path = Path(os.environ["FLASH_VOLUME_PATH"], "note.txt")
        return {"text": path.read_text() if path.exists() else None, "prefix": sys.prefix}

    async def scenario() -> tuple[dict, dict]:
        await asyncio.gather(write("warm"), read())  # one worker each, started together
        wrote = await write("written on one node")
        return wrote, await read()

    wrote, got = asyncio.run(scenario())
    assert wrote["folder"] == "/runpod-volume"  # mounted there in the worker's namespace
    assert got["text"] == "written on one node"
    assert node_of(wrote["prefix"], on_own_caches) != node_of(got["prefix"], on_own_caches)
    assert (shared_volumes / "ray-shared" / "note.txt").read_text() == "written on one node"


@pytest.fixture(scope="module")
def without_namespaces(
    tmp_path_factory: pytest.TempPathFactory, uv_cache: Path, apt_dir: Path
) -> Iterator[Cluster]:
    """One node whose ``ray start`` turns namespaces off, as a node without them would be."""
    env = {**shared_caches(uv_cache, apt_dir), "FLASH_NAMESPACES": "off"}
    with running_cluster(tmp_path_factory, "rr", {"head": ["--num-cpus=2"]}, env) as cluster:
        yield cluster


def test_a_node_without_namespaces_runs_layers_relocated_and_says_so(
    without_namespaces: Cluster, flash_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    openflash.configure(backend="ray", address=without_namespaces.address)

    @Endpoint(name="ray-relocated", cpu=CpuInstanceType.CPU3C_1_2, system_dependencies=["tree"])
    def which_tree() -> dict:
        import os
        import shutil

        return {"which": shutil.which("tree"), "real": os.path.exists("/usr/bin/tree")}

    try:
        with caplog.at_level(logging.WARNING, logger="openflash"):
            found = asyncio.run(which_tree())
    finally:
        process._overrides.clear()
        process.shutdown()
    layers = without_namespaces.homes["head"] / "layers"
    assert Path(found["which"]).is_relative_to(layers) and not found["real"], found
    reports = [r.getMessage() for r in caplog.records if "relocated mode" in r.getMessage()]
    assert len(reports) == 1 and "FLASH_NAMESPACES=off" in reports[0], reports
