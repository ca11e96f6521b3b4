"""Client mode's pieces that need no server: where `Endpoint(id=/url=)` points, what a client
refuses, the route forms' checks, `FlashApp` and `ResourceManager` (Runpod's cloud operations
refused with a hint), and the health shape. The calls themselves run against a real `flash run`
in tests/e2e/test_client_mode.py."""

from __future__ import annotations

import asyncio
import logging

import pytest

from openflash import (
    ConfigError,
    CpuLiveLoadBalancer,
    CpuLiveServerless,
    Endpoint,
    FlashApp,
    FlashError,
    LiveLoadBalancer,
    ResourceManager,
    remote,
)
from openflash.api.remote import RemoteFunction
from openflash.server.endpoint_health import SyncCalls, health_body


def test_id_points_at_flash_run_and_url_at_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASH_SERVER_URL", raising=False)
    monkeypatch.delenv("FLASH_PORT", raising=False)
    assert Endpoint(id="my-worker").address.base == "http://localhost:8888/v2/my-worker"  # type: ignore[union-attr]
    monkeypatch.setenv("FLASH_PORT", "9123")  # where `flash run` listens when it is set
    assert Endpoint(id="w").address.base == "http://localhost:9123/v2/w"  # type: ignore[union-attr]
    monkeypatch.setenv("FLASH_SERVER_URL", "http://10.0.0.5:9000/")
    assert Endpoint(id="w").address.base == "http://10.0.0.5:9000/v2/w"  # type: ignore[union-attr]
    ep = Endpoint(url="https://api.runpod.ai/v2/abc123/")
    assert ep.address.base == "https://api.runpod.ai/v2/abc123"  # type: ignore[union-attr]
    assert ep.is_client and repr(ep) == "Endpoint(url='https://api.runpod.ai/v2/abc123/')"
    assert not Endpoint(name="mine").is_client


def test_bad_client_arguments_name_the_value() -> None:
    with pytest.raises(FlashError, match=r"Endpoint\(url='ftp://x'\) is not an http\(s\) URL"):
        Endpoint(url="ftp://x")
    with pytest.raises(FlashError, match=r"Endpoint\(id='a/b'\) is not an endpoint name"):
        Endpoint(id="a/b")
    with pytest.raises(ConfigError, match=r"Endpoint\(id=..., url=...\): these are exclusive"):
        Endpoint(id="a", url="http://localhost:8888/a")


def test_a_client_is_no_decorator_and_its_routes_are_calls() -> None:
    client = Endpoint(id="other")
    call = client.post("/v1/completions", {"prompt": "hi"})
    with pytest.raises(FlashError, match="cannot add a route to it") as e:
        call(lambda: None)
    assert "await ep.post('/v1/completions', data)" in e.value.hint
    with pytest.raises(ConfigError, match="is a client of an endpoint served elsewhere"):
        client(lambda: None)


def test_queue_calls_on_a_decorating_endpoint_say_what_to_do() -> None:
    ep = Endpoint(name="mine", cpu="cpu3c-1-2")
    with pytest.raises(ConfigError, match="endpoint 'mine' is not a client") as e:
        asyncio.run(ep.runsync({}))
    assert "Endpoint(id='mine')" in e.value.hint
    with pytest.raises(ConfigError, match=r"data and \['timeout'\] only go with a client"):
        ep.post("/x", timeout=3)


def test_route_forms_check_method_and_path(caplog: pytest.LogCaptureFixture) -> None:
    lb = LiveLoadBalancer(name="routes-check")
    with pytest.raises(ConfigError, match="method='FETCH' is not an HTTP method") as e:
        remote(lb, method="FETCH", path="/x")
    assert "GET, POST, PUT, DELETE, PATCH" in e.value.hint
    with pytest.raises(ConfigError, match="route path 'x' must start with '/'"):
        remote(lb, method="POST", path="x")
    with pytest.raises(
        ConfigError, match="route path '/ping' of endpoint 'routes-check' is reserved"
    ):
        remote(lb, method="GET", path="/ping")
    with pytest.raises(ConfigError, match="decorates functions, not"):
        remote(lb, method="POST", path="/c")(type("C", (), {}))
    # On a queue config, method and path are ignored with a warning, as Runpod Flash does.
    with caplog.at_level(logging.WARNING, logger="openflash"):
        plain = remote(CpuLiveServerless(name="queue-one"), method="POST", path="/x")(_double)
    assert "only applies to a load-balancer config" in caplog.text
    assert isinstance(plain, RemoteFunction) and not hasattr(plain, "__flash_route__")


async def _double(x: int) -> int:
    return 2 * x


def test_route_forms_make_routes_of_their_endpoint() -> None:
    handle = remote(CpuLiveLoadBalancer(name="legacy-api"), method="post", path="/double")(_double)
    route = handle.__flash_route__
    assert (route.method, route.path, route.local) == ("POST", "/double", False)
    assert route.handle is handle and handle.endpoint.name == "legacy-api"
    local = remote(LiveLoadBalancer(name="legacy-api"), method="GET", path="/here", local=True)
    fn = local(_double)
    assert fn is _double and fn.__flash_route__.local and fn.__flash_route__.handle.endpoint
    api = Endpoint(name="api-local", cpu="cpu3c-1-2")
    kept = api.get("/here", local=True)(_triple)
    assert kept is _triple and api.routes[0].local and api.routes[0].path == "/here"


async def _triple(x: int) -> int:
    return 3 * x


def test_flash_app_keeps_what_means_something_here() -> None:
    app = FlashApp("my-app")
    assert (app.name, app.id, app.resources) == ("my-app", "", {})
    config = CpuLiveServerless(name="app-worker")
    handle = app.remote(config)(_double)
    assert isinstance(handle, RemoteFunction) and handle.endpoint.name == "app-worker"
    assert app.resources == {"CpuLiveServerless:app-worker": config}
    with pytest.raises(FlashError, match=r"FlashApp.upload_build\(\) uploads a build") as e:
        app.upload_build("build.tar.gz")
    assert "flash run" in e.value.hint
    with pytest.raises(FlashError, match=r"FlashApp.from_name\(\) finds the app on Runpod's cloud"):
        FlashApp.from_name("my-app")
    with pytest.raises(AttributeError):
        app.no_such_thing  # noqa: B018 (an unknown name stays an AttributeError)


def test_resource_manager_tracks_configs_in_this_process() -> None:
    manager = ResourceManager()
    assert ResourceManager() is manager
    config = CpuLiveServerless(name="tracked-one")

    async def scenario() -> tuple[str, object, dict[str, object]]:
        key = await manager.register_resource(config)
        again = await manager.get_or_deploy_resource(CpuLiveServerless(name="tracked-one"))
        return key, again, await manager.undeploy_resource("CpuLiveServerless:nope")

    key, again, missing = asyncio.run(scenario())
    assert key == "CpuLiveServerless:tracked-one" and again is config
    assert manager.find_resources_by_name("tracked-one") == [(key, config)]
    assert missing["success"] is False and "not found in tracking" in missing["message"]
    done = asyncio.run(manager.undeploy_resource(key))
    assert done["success"] is True and done["name"] == "tracked-one"
    assert key not in manager.list_all_resources()


def test_health_body_in_runpod_shape() -> None:
    pool = {
        "detail": [
            {"state": "ready", "calls": 1},
            {"state": "ready", "calls": 0},
            {"state": "starting", "calls": 0},
        ]
    }
    body = health_body({"COMPLETED": 2, "TIMED_OUT": 1, "IN_QUEUE": 1}, 1, {"FAILED": 2}, pool)
    assert body == {
        "jobs": {"completed": 2, "failed": 3, "inProgress": 0, "inQueue": 1, "retried": 1},
        "workers": {
            "idle": 1,
            "initializing": 1,
            "ready": 2,
            "running": 1,
            "throttled": 0,
            "unhealthy": 0,
        },
    }
    assert health_body({}, 0, {}, None)["workers"]["ready"] == 0


def test_the_light_client_inside_workers_has_client_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a worker `Endpoint` is workers/client.py's: id= and url= make a client there too
    (a worker sees FLASH_SERVER_URL only when its endpoint's env= passes it)."""
    from openflash.workers import client

    monkeypatch.setenv("FLASH_SERVER_URL", "http://127.0.0.1:9")
    light = client.Endpoint(id="other")
    assert light.address is not None and light.address.base == "http://127.0.0.1:9/v2/other"
    with pytest.raises(FlashError, match=r"Endpoint\(id='other'\): cannot reach"):
        asyncio.run(light.health())
    routes = client.Endpoint(name="api")
    routes.get("/here", local=True)(_triple)
    assert routes.routes == [("GET", "/here", _triple)]
    with pytest.raises(FlashError, match="is not a client inside a worker"):
        asyncio.run(client.Endpoint(name="img", image="some/image").runsync({}))


def test_runsync_answers_are_kept_a_while_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    sync = SyncCalls(budget=1 << 20)
    sync.note({"kind": "runsync", "route": "/a/f", "status": "COMPLETED"})
    sync.note({"kind": "run", "route": "/a/f", "status": "IN_QUEUE"})  # journaled: not here
    assert sync.of("/a/f") == {"COMPLETED": 1}
    sync.keep("/a/f", {"id": "j1", "status": "COMPLETED", "output": 1}, 50)
    assert sync.answer("j1", "/a/f") == {"id": "j1", "status": "COMPLETED", "output": 1}
    assert sync.answer("j1", "/b/g") is None  # another route's id is not this route's job
    monkeypatch.setattr(SyncCalls, "MOST", 2)
    for n in range(2, 5):
        sync.keep("/a/f", {"id": f"j{n}", "status": "COMPLETED"}, 40)
    assert sync.answer("j1", "/a/f") is None and sync.answer("j4", "/a/f") is not None
    past = SyncCalls(budget=1 << 20, keep_s=-1.0)  # kept past its time: gone
    past.keep("/a/f", {"id": "j5", "status": "COMPLETED"}, 40)
    assert past.answer("j5", "/a/f") is None


def test_an_image_endpoint_still_declares_routes_run_in_its_image() -> None:
    """With image= and a handler to decorate, @api.post(path) is a route whose workers run in
    the image (openflash's custom images); awaited instead, the same call goes to the image's
    own server (tests/backends/test_image_clients.py)."""
    api = Endpoint(name="img-routes", image="localhost/some:image", cpu="cpu3c-1-2")
    assert api.is_client

    @api.post("/go")
    async def go(x: int) -> int:
        return x

    assert [(r.method, r.path) for r in api.routes] == [("POST", "/go")]
    assert api.routes[0].handle.endpoint.resource.image == "localhost/some:image"
    with pytest.raises(
        ConfigError, match="route path '/ping' of endpoint 'img-routes' is reserved"
    ):
        api.get("/ping")(go)
