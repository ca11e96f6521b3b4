"""Decoration-time behaviour of remote and Endpoint: validation, errors, handles (no calls)."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from openflash import (
    CpuInstanceType,
    CpuLiveServerless,
    Endpoint,
    GpuGroup,
    GpuType,
    LiveServerless,
    remote,
)
from openflash.api.remote import RemoteClass, RemoteFunction
from openflash.errors import ConfigError, DependencyError, SystemDependencyError

CONFIG = CpuLiveServerless(name="deco")


def test_unknown_keyword_suggests_the_closest_name() -> None:
    with pytest.raises(
        TypeError,
        match=r"remote\(\) got unexpected keyword argument: 'dependancies' \(did you mean 'dependencies'\?\)",
    ):
        remote(CONFIG, dependancies=["six"])
    with pytest.raises(
        TypeError, match="'system_deps' \\(did you mean 'system_dependencies'\\?\\)"
    ):
        remote(CONFIG, system_deps=["ffmpeg"])
    with pytest.raises(TypeError, match="arguments: 'colour', 'flavour'"):
        remote(CONFIG, flavour=1, colour=2)


def test_resource_config_must_be_a_config() -> None:
    with pytest.raises(ConfigError, match="resource_config must be a resource config, got 'gpu'"):
        remote("gpu")  # type: ignore[arg-type]


def test_without_a_config_a_function_gets_a_cpu_endpoint_of_its_name() -> None:
    # The user guide's "Minimize dependencies" snippet: @remote(dependencies=["requests"]).
    @remote(dependencies=["requests"])
    async def fetch_data(url: str) -> dict: ...

    assert fetch_data.endpoint.name == "fetch_data"
    assert isinstance(fetch_data.endpoint.resource, CpuLiveServerless)


def test_invalid_specs_raise_at_decoration() -> None:
    with pytest.raises(DependencyError, match=r"dependencies\[1\] 'torch=2.1'"):

        @remote(CONFIG, dependencies=["six", "torch=2.1"])
        async def f() -> None: ...

    with pytest.raises(SystemDependencyError, match=r"system_dependencies\[0\] 'ffmpeg; reboot'"):
        remote(CONFIG, system_dependencies=["ffmpeg; reboot"])


def test_decorated_function_keeps_its_identity_and_config() -> None:
    @remote(CONFIG, dependencies=["Six", "six"], system_dependencies=["wget"])
    def plain(x: int) -> int:
        """Doc."""
        return x

    assert isinstance(plain, RemoteFunction)
    assert plain.__name__ == "plain" and plain.__doc__ == "Doc."
    assert plain.endpoint.dependencies == ("six",)
    assert plain.__remote_config__["system_dependencies"] == ["wget"]
    assert "endpoint 'deco'" in repr(plain)


def test_local_true_returns_the_object_itself() -> None:
    @remote(CONFIG, dependencies=["six"], local=True)
    def here(x: int) -> int:
        return x + 1

    assert here(1) == 2
    assert here.__flash_local__ is True

    @remote(CONFIG, local=True)
    async def here_async(x: int) -> int:
        return x * 2

    assert asyncio.run(here_async(4)) == 8


def test_classes_become_class_handles() -> None:
    @remote(CONFIG)
    class Model:
        def predict(self, x: int) -> int:
            return x

    assert isinstance(Model, RemoteClass)
    instance = Model()
    assert callable(instance.predict)
    with pytest.raises(AttributeError, match="'Model' has no method 'train'"):
        instance.train  # noqa: B018


def test_endpoint_handles_pickle_to_light_client_references() -> None:
    import pickle

    from openflash.workers import client

    @remote(CONFIG)
    async def other() -> None: ...

    # Inside a worker, the same pickle gives the light client's handle, which calls back
    # through the parent under this (file, qualified name).
    copy = pickle.loads(pickle.dumps(other))
    assert isinstance(copy, client.RemoteFunction)
    assert (copy._file, copy._qualname) == (os.path.realpath(__file__), other.__qualname__)

    @remote(CONFIG)
    class Model:
        def predict(self) -> int:
            return 1

    assert isinstance(pickle.loads(pickle.dumps(Model)), client.RemoteClass)
    instance = Model()
    light = pickle.loads(pickle.dumps(instance))
    assert isinstance(light, client.RemoteInstance) and light._id == instance._id


def test_endpoint_workers_forms() -> None:
    assert (Endpoint("a").workers_min, Endpoint("a").workers_max) == (0, 1)
    e = Endpoint("a", workers=3)
    assert (e.workers_min, e.workers_max) == (0, 3)
    e = Endpoint("a", workers=(1, 4))
    assert (e.workers_min, e.workers_max) == (1, 4)
    for bad in [0, (2, 1), (-1, 2), (1,), "3", (1, "2"), True]:
        with pytest.raises(ConfigError, match="workers"):
            Endpoint("a", workers=bad)  # type: ignore[arg-type]


def test_endpoint_builds_the_matching_resource_config() -> None:
    @Endpoint(
        name="cpu-ep",
        cpu=CpuInstanceType.CPU3C_1_2,
        workers=(0, 3),
        idle_timeout=5,
        execution_timeout_ms=1500,
        env={"A": "1"},
        max_concurrency=4,
        dependencies=["six"],
    )
    async def cpu_fn() -> None: ...

    r = cpu_fn.endpoint.resource
    assert isinstance(r, CpuLiveServerless)
    assert (r.workersMin, r.workersMax, r.idleTimeout, r.executionTimeoutMs) == (0, 3, 5, 1500)
    assert r.instanceIds == [CpuInstanceType.CPU3C_1_2] and r.env == {"A": "1"}
    assert cpu_fn.endpoint.max_concurrency == 4

    @Endpoint(gpu=GpuType.NVIDIA_L4, gpu_count=2)
    async def gpu_fn() -> None: ...

    g = gpu_fn.endpoint.resource
    assert isinstance(g, LiveServerless)
    assert gpu_fn.endpoint.name == "gpu_fn"  # the function's name when none is given
    assert g.gpus == [GpuType.NVIDIA_L4] and g.gpuCount == 2

    @Endpoint("default")
    async def default_fn() -> None: ...

    assert default_fn.endpoint.resource.gpus == [GpuGroup.ANY]  # neither gpu nor cpu: any GPU
    assert Endpoint("s", cpu="cpu5c-2-4").cpu == [CpuInstanceType.CPU5C_2_4]


def test_endpoint_errors() -> None:
    with pytest.raises(ConfigError, match="gpu and cpu are mutually exclusive"):
        Endpoint("a", gpu=GpuGroup.ADA_24, cpu=CpuInstanceType.CPU3C_1_2)
    with pytest.raises(ConfigError, match="max_concurrency must be >= 1, got 0"):
        Endpoint("a", max_concurrency=0)
    with pytest.raises(ConfigError, match="cpu='cpu9' is not a CPU instance type"):
        Endpoint("a", cpu="cpu9")
    with pytest.raises(ConfigError, match="gpu must be a GpuGroup"):
        Endpoint("a", gpu="ADA_24")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="idleTimeout=0"):
        Endpoint("a", idle_timeout=0)
    with pytest.raises(ConfigError, match=r"Endpoint\(id=..., image=...\): these are exclusive"):
        Endpoint(id="abc", image="vllm/vllm-openai:latest")
    with pytest.raises(TypeError, match="'dependecies' \\(did you mean 'dependencies'\\?\\)"):
        Endpoint("a", dependecies=["six"])


def test_endpoint_cloud_only_arguments_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="openflash"):
        Endpoint("a", datacenter="EU-RO-1", flashboot=False, scaler_value=2)
    assert "Endpoint(datacenter='EU-RO-1') only applies on Runpod's cloud" in caplog.text


def test_route_form_registers_handlers_as_remote_handles() -> None:
    api = Endpoint(name="routes", cpu=CpuInstanceType.CPU3C_1_2, workers=(1, 3))

    @api.post("/sum")
    def total(values: list[int]) -> int:
        return sum(values)

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict: ...

    # Awaiting a handler runs it on the endpoint's workers (tests/e2e/test_nested.py); the
    # function itself stays reachable, and its route's handle is the same object.
    assert isinstance(total, RemoteFunction) and total.__wrapped__([1, 2]) == 3
    assert api.routes[0].handle is total and api.routes[0].function is total.__wrapped__
    assert api.is_load_balanced
    assert [(r.method, r.path) for r in api.routes] == [
        ("POST", "/sum"),
        ("GET", "/items/{item_id}"),
    ]
    assert api.routes[0].handle.endpoint.name == "routes"
    assert type(api.routes[0].handle.endpoint.resource).__name__ == "CpuLiveLoadBalancer"


@pytest.mark.parametrize("path", ["/execute", "/ping", "/ping/"])
def test_reserved_route_paths_are_refused(path: str) -> None:
    api = Endpoint(name="routes")
    with pytest.raises(ConfigError, match="is reserved"):
        api.post(path)


def test_route_form_errors() -> None:
    api = Endpoint(name="routes")

    @api.post("/a")
    def a() -> None: ...

    with pytest.raises(ConfigError, match="duplicate route POST /a"):
        api.post("/a")
    with pytest.raises(ConfigError, match="must start with '/'"):
        api.get("nope")
    with pytest.raises(ConfigError, match="cannot also be used as a direct decorator"):
        api(lambda: None)
    with pytest.raises(ConfigError, match="needs a name"):
        Endpoint().get("/x")
    used = Endpoint(name="queue")
    used(lambda: None)
    with pytest.raises(ConfigError, match="cannot have routes"):
        used.get("/x")
    with pytest.raises(ConfigError, match="decorates functions"):
        Endpoint(name="r").post("/c")(type("C", (), {}))


def test_preload_lists_what_the_code_imports_and_the_modules_of_what_it_uses() -> None:
    from openflash.runtime.preload import imported_modules

    namespace: dict[str, object] = {"__name__": "user_module"}
    source = """
from json import dumps
import logging
from xml.etree import ElementTree
import xml.dom.minidom as minidom

def uses():
    import email.message
    dumps({})
    logging.getLogger()
    ElementTree.fromstring("<a/>"), minidom.parseString("<a/>")
    return helper()

def helper():
    return 1
"""
    exec(compile(source, "user_module.py", "exec"), namespace)
    # email.message (imported inside, by its dotted name: a template that imported only email
    # would leave it to each forked worker), json (a function used from it), logging and the
    # submodules used through globals, dotted too; not the function's own module.
    assert imported_modules(namespace["uses"]) == (
        "email.message",
        "json",
        "logging",
        "xml.etree.ElementTree",
        "xml.dom.minidom",
    )
