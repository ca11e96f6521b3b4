"""Nested calls on Ray: the pipeline project (tests/fixtures/apps/pipeline) on a real local
cluster of two nodes, each with its own store. The route's worker calls the three stages on
their endpoints' workers, spread over both nodes, with the project folder shipped to the nodes
(each worker imports the project's modules from its node's copy); a stage's error reaches the
caller chained through both calls, and a self-call at workersMax fails as a deadlock."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ray import Cluster, running_cluster, shared_caches

from helpers import run_python, write

pytestmark = pytest.mark.ray

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "pipeline"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, uv_cache: Path, apt_dir: Path
) -> Iterator[Cluster]:
    nodes = {"head": ["--num-cpus=3"], "node2": ["--num-cpus=3"]}
    with running_cluster(tmp_path_factory, "rn", nodes, shared_caches(uv_cache, apt_dir)) as c:
        yield c


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-nested-project") / "pipeline"
    shutil.copytree(FIXTURE, root)
    return root


def driver_env(cluster: Cluster, home: Path, uv_cache: Path, **more: str) -> dict[str, str]:
    return {
        "FLASH_BACKEND": "ray",
        "RAY_ADDRESS": cluster.address,
        "FLASH_HOME": str(home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        **more,
    }


def node_of(path: str, cluster: Cluster) -> str:
    (name,) = [n for n, home in cluster.homes.items() if Path(path).is_relative_to(home)]
    return name


def test_a_pipeline_runs_its_stages_across_nodes_from_the_shipped_project(
    cluster: Cluster, project: Path, tmp_path: Path, uv_cache: Path
) -> None:
    env = driver_env(cluster, tmp_path / "driver", uv_cache)
    done = run_python(project / "pipeline.py", "  Hello Nested World ", env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    stages = result["stages"]
    assert result["summary"] == "long: hello nested world"
    assert stages["preprocess"]["six"] == stages["postprocess"]["six"] == "1.16.0"
    assert stages["infer"]["six"] == "1.17.0" and result["pipeline_six"] is None
    # Each stage ran in an environment of a node's store, and the stages used both nodes.
    nodes = {node_of(stages[s]["prefix"], cluster) for s in ("preprocess", "infer", "pipeline")}
    assert nodes == set(cluster.homes), stages
    # The route's worker imported the project's module from its node's copy, not the driver's.
    inference = Path(stages["pipeline"]["inference"])
    home = cluster.homes[node_of(str(inference), cluster)]
    assert inference.parent.parent == home / "projects" and inference.name == "inference.py"
    assert (inference.parent / "pipeline.py").read_text() == (project / "pipeline.py").read_text()


def test_a_stage_error_is_chained_through_the_nested_call(
    cluster: Cluster, project: Path, tmp_path: Path, uv_cache: Path
) -> None:
    env = driver_env(cluster, tmp_path / "driver", uv_cache)
    done = run_python(project / "pipeline.py", "boom", env=env, timeout=600)
    assert done.returncode == 1
    first = next(line for line in done.stderr.splitlines() if line.startswith("openflash.errors"))
    assert first == "openflash.errors.RemoteValueError: ValueError: the model cannot read 'boom'"
    assert (
        "(raised by infer() on endpoint 'nested-gpu')\n"
        "(raised by run() on endpoint 'nested-pipeline')\n"
    ) in done.stderr
    assert done.stderr.index("The nested call above failed here:") > done.stderr.index("infer")


def test_a_self_call_at_workers_max_fails_as_a_deadlock(
    cluster: Cluster, project: Path, tmp_path: Path, uv_cache: Path
) -> None:
    env = driver_env(cluster, tmp_path / "driver", uv_cache)
    done = run_python(project / "pipeline.py", "--recurse", env=env, timeout=300)
    assert done.returncode == 1
    assert "DeadlockError" in done.stderr
    assert (
        "the nested call recurse() on endpoint 'nested-self' was failed: it could never run. "
        "All 1 worker(s) the endpoint may run (workersMax=1, max_concurrency=1) are busy"
    ) in done.stderr


def test_a_project_past_the_size_limit_fails_naming_its_largest_file(
    cluster: Cluster, tmp_path: Path, uv_cache: Path
) -> None:
    root = tmp_path / "big"
    write(
        root / "main.py",
        """
        import asyncio
        from openflash import CpuInstanceType, Endpoint

        @Endpoint(name="ray-big-project", cpu=CpuInstanceType.CPU3C_1_2)
        def one() -> int:
            import helper
            return helper.ONE

        try:
            asyncio.run(one())
        except Exception as e:
            print(type(e).__name__, e)
        """,
    )
    write(root / "helper.py", "ONE = 1\n")
    (root / "weights.bin").write_bytes(b"\0" * 3_000_000)
    env = driver_env(cluster, tmp_path / "driver", uv_cache, FLASH_RAY_PROJECT_LIMIT="1M")
    done = run_python(root / "main.py", env=env, timeout=300)
    assert "more than the 1.0 MB shipped to Ray nodes (FLASH_RAY_PROJECT_LIMIT)" in done.stdout, (
        done.stdout + done.stderr[-2000:]
    )
    assert "weights.bin (3.0 MB)" in done.stdout
