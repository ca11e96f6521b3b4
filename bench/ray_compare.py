"""openflash's Ray backend against Ray's own ``runtime_env={"uv": [...]}``, in one run.

A one-node Ray cluster on loopback. Each repetition is a new driver process calling a function
that needs the small set of packages, in an environment that does not exist yet:

- openflash: the node's store loses the set's environment between repetitions (the node keeps
  its Ray overlay, a once-per-node cost), and each driver starts without a cached resolution;
- Ray: each repetition asks for the same packages under a spelling Ray has not seen (so its
  runtime-env cache misses), e.g. ``httpx>=0.1`` then ``httpx>=0.2``.

Disk per extra environment: the blocks an environment adds beyond the node's shared caches (uv's
and the store's bytecode, which openflash hardlinks from), against the size of Ray's
per-environment folder (Ray installs with ``uv pip install --no-cache`` by default: copies).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench import cases, raycluster
from bench.disk import blocks

OPENFLASH_PROGRAM = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    import ray
    from openflash import CpuLiveServerless, remote

    ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR")  # as Ray's program does

    @remote(CpuLiveServerless(name="bench-ray", instanceIds=["cpu3c-1-2"]),
            dependencies=json.loads(sys.argv[1]))
    def touch():
        import requests, PIL, dateutil, httpx
        return 1

    started = time.perf_counter()
    asyncio.run(touch())
    print(json.dumps(time.perf_counter() - started))
    """
)

RAY_PROGRAM = textwrap.dedent(
    """
    import json, sys, time, ray
    ray.init(address=sys.argv[2], logging_level="ERROR")

    @ray.remote(runtime_env={"uv": json.loads(sys.argv[1])})
    def touch():
        import requests, PIL, dateutil, httpx
        return 1

    started = time.perf_counter()
    ray.get(touch.remote())
    print(json.dumps(time.perf_counter() - started))
    """
)

#: What any worker with a runtime environment of its own costs Ray to start (no packages): the
#: floor under both systems' figures.
FLOOR_PROGRAM = textwrap.dedent(
    """
    import json, sys, time, ray
    ray.init(address=sys.argv[1], logging_level="ERROR")

    @ray.remote(num_cpus=1, runtime_env={"env_vars": {"BENCH": sys.argv[2]}})
    class Empty:
        def ready(self):
            return 1

    started = time.perf_counter()
    ray.get(Empty.remote().ready.remote())
    print(json.dumps(time.perf_counter() - started))
    """
)


def _run(program: Path, args: list[str], env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, str(program), *args], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"{program.name} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def compare(bench: cases.Bench, reps: int) -> dict[str, object]:
    why = raycluster.available()
    if why:
        raise RuntimeError(f"the ray case {why}")
    root = bench.root / "ray"
    node_home = root / "node-home"
    node_env = {
        **os.environ,
        "FLASH_HOME": str(node_home),
        "FLASH_UV_CACHE_DIR": str(bench.uv_cache),
        "RAY_AUTH_MODE": "disabled",
    }
    root.mkdir(parents=True, exist_ok=True)
    ours = root / "openflash_program.py"
    ours.write_text(OPENFLASH_PROGRAM)
    theirs = root / "ray_program.py"
    theirs.write_text(RAY_PROGRAM)
    floor = root / "floor_program.py"
    floor.write_text(FLOOR_PROGRAM)
    with raycluster.local_cluster(root / "tmp", node_env) as address:
        driver_home = root / "driver-home"
        driver_env = {
            **node_env,
            "FLASH_BACKEND": "ray",
            "RAY_ADDRESS": address,
            "FLASH_HOME": str(driver_home),
        }
        specs = json.dumps(cases.SMALL_SET)
        _run(ours, [specs], driver_env)  # the node's Ray overlay, uv's cache
        ours_times, ray_times, floor_times = [], [], []
        for i in range(reps):
            _forget_environments(node_home)
            _forget_resolutions(driver_home)
            ours_times.append(_run(ours, [specs], driver_env))
            spelling = [*cases.SMALL_SET[:-1], f"httpx>=0.{i + 1}"]
            ray_times.append(_run(theirs, [json.dumps(spelling), address], node_env))
            floor_times.append(_run(floor, [address, str(i)], node_env))
        env_dir = _small_set_environment(node_home)
        shared = (bench.uv_cache, node_home / "bytecode")
        ours_disk = blocks(*shared, env_dir) - blocks(*shared)
        ray_dirs = sorted((root / "tmp" / "session_latest" / "runtime_resources" / "uv").iterdir())
        ray_disk = blocks(ray_dirs[-1])
    return {
        "openflash": ours_times,
        "ray": ray_times,
        "floor": floor_times,
        "openflash_disk": ours_disk,
        "ray_disk": ray_disk,
    }


def _is_small_set(text: str) -> bool:
    """Whether a lock or a cached resolution is the small set's (not Ray's overlay, which also
    pins requests)."""
    lowered = text.lower()
    return "pillow" in lowered and "ray==" not in lowered


def _forget_resolutions(home: Path) -> None:
    """The driver resolves the set again, as it would for a new environment."""
    for cached in (home / "resolutions").glob("*.json"):
        if _is_small_set(cached.read_text()):
            cached.unlink()


def _small_set_environment(home: Path) -> Path:
    for env in (home / "envs").iterdir():
        lock = env / "openflash-lock.txt"
        if lock.is_file() and _is_small_set(lock.read_text()):
            return env
    raise RuntimeError("the small set's environment was not built on the node")


def _forget_environments(home: Path) -> None:
    """Remove the small set's environment from the node's store (Ray's overlay stays)."""
    from openflash.envs.store import Store

    store = Store(home)
    deadline = time.monotonic() + 30
    for entry in store.entries("envs"):
        if _is_small_set((entry.path / "openflash-lock.txt").read_text()):
            while True:  # the previous driver's actor may still be on its way out
                try:
                    store.remove("envs", entry.key)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
