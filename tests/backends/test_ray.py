"""The Ray backend on a real local Ray cluster: a head and a second node, each with a store.

Skipped where Ray is not installed or cannot start, except when OPENFLASH_REQUIRE_RAY is set
(.ci/run sets it), where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import openflash
from openflash import (
    CpuInstanceType,
    CpuLiveServerless,
    Endpoint,
    ExecutionTimeoutError,
    WorkerCrashedError,
    remote,
)
from openflash.envs.store import Store
from openflash.runtime import process

from helpers import FlashServer, free_port, run_python, write

pytestmark = pytest.mark.ray


def _unavailable(reason: str) -> None:
    if os.environ.get("OPENFLASH_REQUIRE_RAY"):
        pytest.fail(f"Ray is required here (OPENFLASH_REQUIRE_RAY): {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class Cluster:
    address: str
    homes: dict[str, Path]


def _ray_cli() -> list[str]:
    found = shutil.which("ray")
    return [found] if found else [sys.executable, "-m", "ray.scripts.scripts"]


def start_cluster(
    root: Path, nodes: dict[str, list[str]], env: dict[str, str]
) -> tuple[Cluster, Callable[[], None]]:
    """A local cluster of ``nodes`` (name: extra ``ray start`` arguments; the first is the
    head), each node with its own FLASH_HOME, and how to stop it. Each node's ``ray start
    --block`` leads its own process group, which stopping kills: only this cluster stops, never
    another one on the machine (as ``ray stop`` would)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        _unavailable("Ray is not installed (pip install 'openflash[ray]')")
    # A cluster of this test run only, on loopback: no token authentication to set up.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port = free_port()
    address = f"127.0.0.1:{port}"
    homes = {name: root / f"{name}-home" for name in nodes}
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"]
    started: list[subprocess.Popen[bytes]] = []
    # Ray's sockets live under its temp dir and a Unix socket path has at most 107 bytes: pytest's
    # own folders (/tmp/pytest-of-root/pytest-221/ray-gpus0/...) leave too little room.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ofray-", dir="/tmp"))

    def stop() -> None:
        for proc in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    for i, (name, extra) in enumerate(nodes.items()):
        where = (
            ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={ray_tmp}"]
            if i == 0
            else [f"--address={address}"]
        )
        log = root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*_ray_cli(), "start", *where, *common, *extra],
                env={**os.environ, **env, "FLASH_HOME": str(homes[name])},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(proc)
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop()
                _unavailable(f"`ray start` failed for {name}:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
    return Cluster(address, homes), stop


@contextlib.contextmanager
def running_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    prefix: str,
    nodes: dict[str, list[str]],
    env: dict[str, str],
) -> Iterator[Cluster]:
    """A cluster for a fixture (``start_cluster`` in a folder named ``prefix``, keep it short:
    Ray's socket paths): on leaving, this process's runtime stops (its actors go while the
    cluster is up), then the cluster."""
    cluster, stop = start_cluster(tmp_path_factory.mktemp(prefix), nodes, env)
    try:
        yield cluster
    finally:
        process.shutdown()
        stop()


def shared_caches(uv_cache: Path, apt_dir: Path) -> dict[str, str]:
    """The variables giving every node the run's uv cache and apt folder (downloads once)."""
    return {"FLASH_UV_CACHE_DIR": str(uv_cache), "FLASH_APT_DIR": str(apt_dir)}


@pytest.fixture(scope="session")
def ray_cluster(
    tmp_path_factory: pytest.TempPathFactory, uv_cache: Path, apt_dir: Path
) -> Iterator[Cluster]:
    nodes = {"head": ["--num-cpus=2"], "node2": ["--num-cpus=2"]}
    with running_cluster(tmp_path_factory, "ray", nodes, shared_caches(uv_cache, apt_dir)) as c:
        yield c


@pytest.fixture
def on_ray(ray_cluster: Cluster, flash_home: Path) -> Iterator[Cluster]:
    openflash.configure(backend="ray", address=ray_cluster.address)
    try:
        yield ray_cluster
    finally:
        process._overrides.clear()
        process.shutdown()


def run(coro):
    return asyncio.run(coro)


def test_the_seeds_endpoints_run_on_the_cluster(on_ray: Cluster) -> None:
    @Endpoint(name="ray-none", cpu=CpuInstanceType.CPU3C_1_2)
    async def words(text: str) -> dict:
        import sys

        return {"words": len(text.split()), "prefix": sys.prefix}

    @Endpoint(
        name="ray-pinned",
        cpu=CpuInstanceType.CPU3C_1_2,
        dependencies=["python-dateutil==2.9.0.post0", "six==1.16.0"],
    )
    def weekday(text: str) -> str:
        from dateutil import parser

        return parser.parse(text).strftime("%A")

    @Endpoint(name="ray-system", cpu=CpuInstanceType.CPU3C_1_2, system_dependencies=["graphviz"])
    def render(source: str) -> bytes:
        import subprocess

        return subprocess.run(
            ["dot", "-Tpng"], input=source.encode(), capture_output=True, check=True
        ).stdout

    async def scenario() -> None:
        plain, day, png = await asyncio.gather(
            words("a b c"), weekday("24 November 2026"), render("digraph { a -> b }")
        )
        assert plain["words"] == 3
        assert any(plain["prefix"].startswith(str(h)) for h in on_ray.homes.values())
        assert day == "Tuesday"
        assert png.startswith(b"\x89PNG\r\n\x1a\n")

    run(scenario())
    import ray

    stats = process.get_runtime().pool_stats(words.endpoint)
    addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
    assert stats is not None and stats["detail"][0]["node"] in addresses, stats  # shown per worker


def test_warm_calls_from_a_scripts_loop_never_lend_a_ray_worker(on_ray: Cluster) -> None:
    """A Ray worker's frames go through its actor's pipes, not an asyncio socket: it is never
    lent to a script's loop (runtime/lanes.py); its warm calls hop, and all are answered."""

    @Endpoint(name="ray-lanes", cpu=CpuInstanceType.CPU3C_1_2)
    def triple(x: int) -> int:
        return 3 * x

    async def scenario() -> list[int]:
        return [await triple(i) for i in range(20)]

    assert run(scenario()) == [3 * i for i in range(20)]
    assert run(scenario()) == [3 * i for i in range(20)]
    stats = process.get_runtime().pool_stats(triple.endpoint)
    assert stats is not None and len(stats["pids"]) == 1, stats  # one warm worker, reused
    assert stats["lent"] == 0 and stats["lane_calls"] == 0, stats


def test_conflicting_versions_run_at_once(on_ray: Cluster) -> None:
    def six_version() -> str:
        import six

        return six.__version__

    old = remote(
        openflash.CpuLiveServerless(name="ray-six-old", instanceIds=["cpu3c-1-2"]),
        dependencies=["six==1.16.0"],
    )(six_version)
    new = remote(
        openflash.CpuLiveServerless(name="ray-six-new", instanceIds=["cpu3c-1-2"]),
        dependencies=["six==1.17.0"],
    )(six_version)

    async def both() -> list[str]:
        return list(await asyncio.gather(old(), new(), old(), new()))

    assert run(both()) == ["1.16.0", "1.17.0", "1.16.0", "1.17.0"]


def test_a_killed_actor_fails_its_call_naming_the_node_and_is_replaced(on_ray: Cluster) -> None:
    @Endpoint(name="ray-kill", cpu=CpuInstanceType.CPU3C_1_2, execution_timeout_ms=20_000)
    async def nap(seconds: float) -> int:
        import asyncio
        import os

        await asyncio.sleep(seconds)
        return os.getpid()

    async def scenario() -> None:
        first = await nap(0)
        pending = asyncio.ensure_future(nap(30))
        await asyncio.sleep(1.0)
        os.kill(first, signal.SIGKILL)  # the worker process, on a node of this machine
        started = time.monotonic()
        with pytest.raises(WorkerCrashedError, match=r"pid \d+ on node \S+\) died"):
            await pending
        assert time.monotonic() - started < 10
        assert await nap(0) != first  # a new actor took its place

    run(scenario())


def test_a_pin_of_rays_own_dependency_runs_and_ray_is_not_on_the_users_path(
    on_ray: Cluster,
) -> None:
    """protobuf 3.19 is older than what Ray imports: with Ray in the worker's interpreter the
    worker died at ``import ray``. The worker process is the environment's, without Ray."""

    @Endpoint(
        name="ray-old-protobuf", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["protobuf==3.19.6"]
    )
    def versions() -> dict:
        import google.protobuf

        try:
            import ray  # noqa: F401
        except ImportError as e:
            ray_import = type(e).__name__
        else:
            ray_import = "imported"
        return {"protobuf": google.protobuf.__version__, "ray": ray_import}

    assert run(versions()) == {"protobuf": "3.19.6", "ray": "ModuleNotFoundError"}


def test_a_worker_that_cannot_start_fails_the_call_with_its_node_and_cause(
    on_ray: Cluster,
) -> None:
    # A Python that cannot find its standard library exits at once, as a broken environment does.
    @Endpoint(name="ray-broken", cpu=CpuInstanceType.CPU3C_1_2, env={"PYTHONHOME": "/nonexistent"})
    def never() -> int:
        return 1

    with pytest.raises(WorkerCrashedError) as caught:
        run(asyncio.wait_for(never(), 120))  # a bound on the test: it must not hang
    message = str(caught.value)
    assert re.search(r"on node \S+\) exited before it was ready", message), message
    assert "encodings" in message or "Python" in message, message
    assert caught.value.hint


def test_an_actor_that_cannot_start_its_worker_fails_the_call_naming_the_node(
    on_ray: Cluster,
) -> None:
    @Endpoint(name="ray-lost-env", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["six==1.15.0"])
    def interpreter() -> str:
        import sys

        return sys.executable

    python = Path(run(interpreter()))
    process.shutdown()  # its workers go; the node's store keeps the environment
    python.unlink()  # ... now without an interpreter: the actor cannot start its worker
    with pytest.raises(WorkerCrashedError) as caught:
        run(asyncio.wait_for(interpreter(), 120))  # a bound on the test: it must not hang
    message = str(caught.value)
    assert re.search(r"the Ray actor could not start on node \S+", message), message
    assert str(python) in message, message


def test_execution_timeouts_hold_on_ray(on_ray: Cluster) -> None:
    @Endpoint(name="ray-timeout", cpu=CpuInstanceType.CPU3C_1_2, execution_timeout_ms=1000)
    async def hang() -> None:
        import asyncio

        await asyncio.sleep(60)

    with pytest.raises(ExecutionTimeoutError, match="executionTimeoutMs=1000"):
        run(hang())


def test_map_and_spawn_fan_out_on_ray(on_ray: Cluster) -> None:
    """Fan-out (issue 22) on the Ray backend: results in input order, a failure returned in its
    place, and a spawned job awaited later."""

    @Endpoint(name="ray-map", cpu=CpuInstanceType.CPU3C_1_2, workers=2)
    async def square(x: int) -> int:
        if x == 3:
            raise ValueError("three is not welcome")
        return x * x

    async def scenario() -> tuple[list[object], int]:
        mapped = [r async for r in square.map(range(6), return_exceptions=True)]
        job = square.spawn(7)
        return mapped, await job.result()

    mapped, spawned = run(scenario())
    assert [r if isinstance(r, int) else "error" for r in mapped] == [0, 1, 4, "error", 16, 25]
    assert isinstance(mapped[3], ValueError) and "three is not welcome" in str(mapped[3])
    assert spawned == 49


def test_a_generator_streams_on_ray(on_ray: Cluster, tmp_path: Path) -> None:
    gate, trace = tmp_path / "gate", tmp_path / "closed"

    @Endpoint(name="ray-stream", cpu=CpuInstanceType.CPU3C_1_2)
    def tokens(gate: str, trace: str):
        import os
        import time

        import openflash

        try:
            openflash.progress("started")
            yield "t0"
            while not os.path.exists(gate):  # the rest only once t0 has reached the caller
                time.sleep(0.01)
            i = 1
            while True:
                yield f"t{i}"
                i += 1
        finally:
            with open(trace, "w") as f:
                f.write("closed")

    @Endpoint(name="ray-stream", cpu=CpuInstanceType.CPU3C_1_2)
    async def fails_midway():
        yield 1
        raise ValueError("the second item is bad")

    async def scenario() -> tuple[list[str], list[int], str]:
        got: list[str] = []
        async with tokens(str(gate), str(trace)) as stream:
            async for item in stream:
                if not got:
                    gate.touch()
                got.append(item)
                if len(got) == 4:
                    break
        # leaving the block stopped the worker's generator (its finally runs, below)
        assert stream.progress == "started"
        before: list[int] = []
        try:
            async for number in fails_midway():
                before.append(number)
        except openflash.RemoteError as e:
            return got, before, str(e)
        return got, before, ""

    got, before, error = run(scenario())
    assert got == ["t0", "t1", "t2", "t3"]
    assert before == [1] and "the second item is bad" in error
    deadline = time.monotonic() + 60
    while not trace.exists():  # the generator's finally ran on the node
        assert time.monotonic() < deadline, "the worker's generator was never closed"
        time.sleep(0.05)


def test_closing_the_runtime_leaves_the_cluster(on_ray: Cluster) -> None:
    import ray

    @remote(CpuLiveServerless(name="ray-leave"))
    def one() -> int:
        return 1

    assert run(one()) == 1
    assert ray.is_initialized()
    process.shutdown()
    # A driver left connected to a cluster that then stops is ended by Ray a minute later.
    assert not ray.is_initialized()


def test_an_environment_used_twice_on_a_node_is_built_once(on_ray: Cluster) -> None:
    def idna_version() -> str:
        import idna

        return idna.__version__

    handles = [
        remote(
            openflash.CpuLiveServerless(name=f"ray-share-{i}", instanceIds=["cpu3c-1-2"]),
            dependencies=["idna==3.10"],
        )(idna_version)
        for i in range(3)
    ]

    async def scenario() -> list[str]:
        return list(await asyncio.gather(*(h() for h in handles)))

    assert run(scenario()) == ["3.10"] * 3
    # Three workers on two nodes: one node holds two of them, and built the environment once.
    key = None
    per_node = {}
    for name, home in on_ray.homes.items():
        built = [e for e in Store(home).events() if e["kind"] == "envs"]
        per_node[name] = built
        for event in built:
            env_dir = home / "envs" / event["key"]
            if "idna==3.10" in (env_dir / "openflash-lock.txt").read_text():
                key = event["key"]
    assert key is not None
    for name, built in per_node.items():
        assert [e["key"] for e in built].count(key) <= 1, f"{name} built {key} twice"
    used = {
        name: json.loads((h / "envs" / key / ".openflash-used.json").read_text())["endpoints"]
        for name, h in on_ray.homes.items()
        if (h / "envs" / key).exists()
    }
    assert sum(len(v) for v in used.values()) == 3 and max(len(v) for v in used.values()) >= 2


def test_node_agents_outlive_a_kill(on_ray: Cluster) -> None:
    import ray

    @Endpoint(name="ray-agent-a", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["idna==3.7"])
    def first() -> str:
        import idna

        return idna.__version__

    assert run(first()) == "3.7"
    agents = [
        a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "openflash"
    ]
    assert agents and all(a["name"].startswith("openflash-") for a in agents)
    for agent in agents:  # Ray restarts them; the backend asks again
        ray.kill(ray.get_actor(agent["name"], namespace="openflash"), no_restart=False)

    @Endpoint(name="ray-agent-b", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["idna==3.6"])
    def second() -> str:
        import idna

        return idna.__version__

    assert run(second()) == "3.6"


def test_a_build_failure_on_a_node_reaches_the_caller(on_ray: Cluster) -> None:
    @Endpoint(
        name="ray-broken-build", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["pyyaml==5.4.1"]
    )  # no wheel for this Python: builds from source, fails
    def f() -> None: ...

    with pytest.raises(openflash.FlashError, match=r"on Ray node .* failed") as info:
        run(f())
    assert "pyyaml" in str(info.value).lower()


def test_flash_run_serves_on_the_cluster_and_shows_each_workers_node(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    import httpx

    project = tmp_path / "project"
    write(
        project / "hello.py",
        """
        import sys
        from openflash import CpuInstanceType, Endpoint

        @Endpoint(name="ray-served", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["six==1.16.0"])
        def hello(name: str) -> dict:
            import six
            return {"hello": name, "six": six.__version__, "prefix": sys.prefix}
        """,
    )
    args = ("--backend", "ray", "--address", ray_cluster.address)
    with FlashServer(project, *args, env={"FLASH_HOME": str(tmp_path / "driver-home")}) as server:
        reply = httpx.post(
            f"{server.url}/hello/runsync", json={"input": {"name": "ray"}}, timeout=120
        )
        assert reply.status_code == 200, reply.text
        output = reply.json()["output"]
        assert output["six"] == "1.16.0"
        # The worker's interpreter is an environment in a node's store, not the driver's.
        homes = {str(h) for h in ray_cluster.homes.values()}
        assert any(output["prefix"].startswith(home + os.sep) for home in homes), output
        state = httpx.get(f"{server.url}/_flash/state", timeout=30).json()
    (endpoint,) = state["endpoints"]
    (worker,) = endpoint["pool"]["detail"]
    assert worker["node"] in _node_addresses(ray_cluster), endpoint


def _node_addresses(cluster: Cluster) -> set[str]:
    """The addresses Ray gives the cluster's nodes, asked from a driver of its own."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes()]))",
            cluster.address,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_without_ray_installed_the_error_says_what_to_install(tmp_path: Path) -> None:
    script = write(
        tmp_path / "no_ray.py",
        """
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="x"))
        def f(): ...

        try:
            asyncio.run(f())
        except Exception as e:
            print(type(e).__name__, str(e).splitlines()[-1])
    """,
    )
    done = run_python(script, env={"FLASH_BACKEND": "ray"})
    assert "pip install 'openflash[ray]'" in done.stdout, done.stderr


def test_a_volume_is_a_folder_of_the_node_that_runs_the_worker(on_ray: Cluster) -> None:
    """Without a shared FLASH_VOLUMES (test_ray_nodes.py has one), a volume is per node: the
    folder of that name in the worker's node's FLASH_HOME/volumes, and no other node's."""

    @Endpoint(name="ray-volume", cpu=CpuInstanceType.CPU3C_1_2, volume="ray-per-node")
    def write(text: str) -> dict:
        import os
        import sys

        folder = os.environ["FLASH_VOLUME_PATH"]
        with open(os.path.join(folder, "note.txt"), "w") as f:
            f.write(text)
        return {"folder": folder, "prefix": sys.prefix}

    wrote = run(write("on this node only"))
    assert wrote["folder"] == "/runpod-volume"  # mounted there in the worker's namespace
    (node,) = [n for n, h in on_ray.homes.items() if Path(wrote["prefix"]).is_relative_to(h)]
    for name, home in on_ray.homes.items():
        note = home / "volumes" / "ray-per-node" / "note.txt"
        assert note.exists() == (name == node), name
    assert (on_ray.homes[node] / "volumes" / "ray-per-node" / "note.txt").read_text() == (
        "on this node only"
    )
