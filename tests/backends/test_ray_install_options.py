"""An endpoint's install options reach the Ray nodes that build its environment: a private index
with basic auth (its password in no node's store) and a find-links folder, on a real local Ray
cluster whose node has neither in its own environment. The index is the loopback index of
tests/index_server.py (no private index can be reached from here).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ray import Cluster, start_cluster

import openflash
from index_server import serve_index
from openflash import CpuLiveServerless, remote
from openflash.runtime import process

from helpers import make_wheel

pytestmark = pytest.mark.ray

#: Made at run time: the test file itself travels to the node (the shipped project).
PASSWORD = "pw-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def one_node(
    tmp_path_factory: pytest.TempPathFactory, uv_cache: Path, apt_dir: Path
) -> Iterator[Cluster]:
    cluster, stop = start_cluster(
        tmp_path_factory.mktemp("ray-options"),
        {"head": ["--num-cpus=2"]},
        {"FLASH_UV_CACHE_DIR": str(uv_cache), "FLASH_APT_DIR": str(apt_dir)},
    )
    try:
        yield cluster
    finally:
        process.shutdown()
        stop()


def _holding(root: Path, secret: bytes) -> list[Path]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                found.append(path)
    return found


def test_a_private_index_and_find_links_reach_the_node_that_builds(
    one_node: Cluster, flash_home: Path, tmp_path: Path
) -> None:
    make_wheel(tmp_path / "private", "acme_i20_private", "2.0", {"acme_i20_private.py": "X = 2\n"})
    make_wheel(tmp_path / "wheels", "acme_i20_linked", "1.0", {"acme_i20_linked.py": "X = 1\n"})

    def both() -> int:
        import acme_i20_linked
        import acme_i20_private

        return acme_i20_private.X * 10 + acme_i20_linked.X

    openflash.configure(backend="ray", address=one_node.address)
    try:
        with serve_index(tmp_path / "private", auth=f"alice:{PASSWORD}") as (url, requests):
            handle = remote(
                CpuLiveServerless(name="ray-options", instanceIds=["cpu3c-1-2"]),
                dependencies=["acme-i20-private", "acme-i20-linked"],
                index_url=url.replace("http://", f"http://alice:{PASSWORD}@"),
                find_links=[str(tmp_path / "wheels")],
            )(both)
            assert asyncio.run(handle()) == 21
    finally:
        process._overrides.clear()
        process.shutdown()
    # The node's own environment names no index: it installed from the endpoint's options
    # (without them its uv asks PyPI, which has no acme-i20-private, and the build fails).
    assert any(r.startswith("/simple/acme-i20-private") for r in requests)
    home = one_node.homes["head"]
    assert list(home.glob("envs/*/openflash-lock.txt")), "the node built nothing"
    assert _holding(home, PASSWORD.encode()) == []
    assert _holding(flash_home, PASSWORD.encode()) == []
