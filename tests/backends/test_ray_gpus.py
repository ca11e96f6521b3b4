"""GPU types on Ray, on a real local cluster of two nodes whose GPUs are declared to Ray: the head
as Ray labels an H100 (``accelerator_type:H100``), the second node with openflash's custom label
(``gpu_type:NVIDIA_L4``). No GPU exists here: Ray is told the nodes have one each
(``--num-gpus=1``), which it takes as given; the worker itself runs on the CPU."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ray import Cluster, running_cluster, shared_caches

import openflash
from openflash import Endpoint, FlashError, GpuGroup, GpuType
from openflash.runtime import process

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def typed_cluster(
    tmp_path_factory: pytest.TempPathFactory, uv_cache: Path, apt_dir: Path
) -> Iterator[Cluster]:
    nodes = {
        "h100": [
            "--num-cpus=1",
            "--num-gpus=1",
            "--resources=" + json.dumps({"accelerator_type:H100": 1}),
        ],
        "l4": [
            "--num-cpus=1",
            "--num-gpus=1",
            "--resources=" + json.dumps({"gpu_type:NVIDIA_L4": 1}),
        ],
    }
    env = shared_caches(uv_cache, apt_dir)
    with running_cluster(tmp_path_factory, "ray-gpus", nodes, env) as cluster:
        yield cluster


@pytest.fixture
def on_typed(typed_cluster: Cluster, flash_home: Path) -> Iterator[Cluster]:
    openflash.configure(backend="ray", address=typed_cluster.address)
    try:
        yield typed_cluster
    finally:
        process._overrides.clear()
        process.shutdown()


def test_endpoints_run_on_the_node_of_their_gpu_type_in_their_order(on_typed: Cluster) -> None:
    @Endpoint(name="on-l4", gpu=GpuGroup.AMPERE_24)
    def where_l4() -> str:
        import sys

        return sys.prefix

    @Endpoint(name="on-h100", gpu=[GpuGroup.HOPPER_141, GpuType.NVIDIA_H100_80GB_HBM3])
    def where_h100() -> str:
        import sys

        return sys.prefix

    @Endpoint(name="on-h200", gpu=GpuGroup.HOPPER_141)
    def where_h200() -> str:
        return "never"

    async def scenario() -> None:
        l4, h100 = await asyncio.gather(where_l4(), where_h100())
        assert l4.startswith(str(on_typed.homes["l4"])), l4
        assert h100.startswith(str(on_typed.homes["h100"])), h100
        with pytest.raises(FlashError) as info:
            await where_h200()
        message = str(info.value)
        assert "'on-h200' asks for 1 GPU(s) of HOPPER_141" in message
        assert "1 x NVIDIA H100 80GB HBM3 (ADA_80_PRO)" in message
        assert "1 x NVIDIA L4 (AMPERE_24)" in message

    asyncio.run(scenario())
