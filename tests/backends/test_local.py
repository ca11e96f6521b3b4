"""The local backend: real worker processes, their environment, GPUs and CPUs."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from openflash.backends.local import LocalBackend, worker_environ
from openflash.backends.targets import LocalTarget
from openflash.errors import FlashError
from openflash.workers import protocol
from openflash.workers.calls import Call
from openflash.workers.pool import Pool, PoolConfig
from openflash.workers.port import WorkerSpec, describe_exit

from test_gpus import fake_nvidia_smi

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def like(base: WorkerSpec, **changes: Any) -> WorkerSpec:
    return dataclasses.replace(base, **changes)


def worker_facts() -> dict[str, Any]:
    import os
    import sys

    return {
        "pid": os.getpid(),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "path": sys.path,
        "pythonpath": os.environ.get("PYTHONPATH"),
        "endpoint_var": os.environ.get("MY_SETTING"),
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def facts_call() -> Call:
    blob = cloudpickle.dumps(worker_facts)
    return Call(protocol.OP_FUNCTION, "facts", blob, cloudpickle.dumps(((), {})), label="facts()")


def gather_facts(spec: WorkerSpec, backend: LocalBackend, workers: int) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        pool = Pool(
            PoolConfig(spec.endpoint, workers_min=workers, workers_max=workers), backend, spec
        )
        try:
            await pool.submit(facts_call())
            while pool.stats()["ready"] < workers:
                await asyncio.sleep(0.05)
            # One call per worker: each is busy until all have answered.
            replies = []
            for worker in list(pool.workers):
                call = facts_call()
                call.future = asyncio.get_running_loop().create_future()
                pool._send(worker, call)
                replies.append(call.future)
            return [pickle.loads((await r).payload) for r in replies]
        finally:
            await pool.close()

    return asyncio.run(main())


def test_environment_drops_host_python_variables(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/host/site-packages")
    monkeypatch.setenv("PYTHONHOME", "/host")
    monkeypatch.setenv("VIRTUAL_ENV", "/host/venv")
    python = bare_spec.target.python
    target = LocalTarget(python, Path("/rt"))
    spec = WorkerSpec(endpoint="e", target=target, cwd=Path.cwd(), env={"MY_SETTING": "on"})
    env = worker_environ(spec, target, (), has_gpus=False)
    assert env["PYTHONPATH"] == "/rt"
    assert "PYTHONHOME" not in env
    assert env["VIRTUAL_ENV"] == str(python.parent.parent)
    assert env["PATH"].startswith(str(python.parent) + os.pathsep)
    assert env["MY_SETTING"] == "on"
    assert env["PYTHONNOUSERSITE"] == "1"


def test_worker_sees_its_endpoint_env_and_runtime_behind_site_packages(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    spec = like(bare_spec, endpoint="local", env={"MY_SETTING": "on"})
    [facts] = gather_facts(spec, LocalBackend(gpus=()), 1)
    assert facts["endpoint_var"] == "on"
    assert facts["pythonpath"] is None  # the runtime's entry is not passed to user subprocesses
    assert str(Path(__file__).parent) not in facts["path"]
    site = next(i for i, p in enumerate(facts["path"]) if p.endswith("site-packages"))
    assert facts["path"].index(str(bare_spec.target.runtime_path)) > site


def test_gpu_workers_get_distinct_devices(
    bare_spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    spec = like(bare_spec, endpoint="gpu", gpu_count=1)
    facts = gather_facts(spec, LocalBackend(), 3)
    assert sorted(f["cuda"] for f in facts) == ["0", "1", "2"]
    two = like(bare_spec, endpoint="gpu2", gpu_count=2)
    [facts2] = gather_facts(two, LocalBackend(), 1)
    assert len(facts2["cuda"].split(",")) == 2
    cpu = like(bare_spec, endpoint="cpu", gpu_count=0)
    [facts3] = gather_facts(cpu, LocalBackend(), 1)
    assert facts3["cuda"] == ""  # a CPU endpoint takes no GPU


def test_without_gpus_a_gpu_endpoint_warns_once_and_runs(
    bare_spec: WorkerSpec, caplog: pytest.LogCaptureFixture
) -> None:
    spec = like(bare_spec, endpoint="wants-gpu", gpu_count=1)
    facts = gather_facts(spec, LocalBackend(gpus=()), 2)
    assert len(facts) == 2
    warnings = [r for r in caplog.records if "asks for a GPU" in r.getMessage()]
    assert len(warnings) == 1
    assert "FLASH_REQUIRE_GPU=1" in warnings[0].getMessage()


def test_require_gpu_makes_it_an_error(bare_spec: WorkerSpec) -> None:
    spec = like(bare_spec, endpoint="wants-gpu", gpu_count=1)

    async def main() -> None:
        pool = Pool(PoolConfig("wants-gpu"), LocalBackend(require_gpu=True, gpus=()), spec)
        try:
            with pytest.raises(FlashError, match="has no NVIDIA GPU") as info:
                await pool.submit(facts_call())
            assert "FLASH_REQUIRE_GPU" in info.value.hint
        finally:
            await pool.close()

    asyncio.run(main())


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to show a cap")
def test_cpu_instance_type_caps_the_workers_cpus(bare_spec: WorkerSpec) -> None:
    spec = like(bare_spec, endpoint="small", vcpus=1)
    facts = gather_facts(spec, LocalBackend(gpus=()), 2)
    assert all(len(f["cpus"]) == 1 for f in facts)
    assert facts[0]["cpus"] != facts[1]["cpus"]  # spread over the machine


def test_describe_exit() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "signal 9 (SIGKILL)"
    assert describe_exit(-11) == "signal 11 (SIGSEGV)"
    assert describe_exit(None) == "unknown status"
