"""``FlashApp`` and ``ResourceManager``, as far as they mean something off Runpod's cloud.

In Runpod Flash, ``FlashApp`` manages an app on Runpod's cloud (its environments, uploaded builds,
deployments) and ``ResourceManager`` tracks the endpoints deployed from this machine (in
``.runpod/resources.pkl``) and deploys or undeploys them. Here nothing is deployed: an endpoint's
workers start on this machine at its first call and stop after ``idleTimeout``. So:

- ``FlashApp(name)`` keeps its ``name``, ``id`` and ``resources``, and ``app.remote(...)`` is the
  ``remote`` decorator (recording the config in ``resources``, as Runpod's does). Its cloud
  operations (``create_environment``, ``upload_build``, ``deploy_build_to_environment``,
  ``from_name``, ``list``, ...) raise ``FlashError`` saying so, with what to do instead.
- ``ResourceManager()`` (one per process) tracks resource configs in memory, keyed as Runpod keys
  them (``"{ConfigClass}:{name}"``): ``register_resource`` and ``get_or_deploy_resource`` record a
  config and return its key or the config (deploying is a first call here), ``list_all_resources``,
  ``find_resources_by_name`` and ``find_resources_by_provider_id`` read the record, and
  ``undeploy_resource`` forgets a config, answering Runpod's result shape.

Standard library only: part of the worker runtime, so a module that builds a ``FlashApp`` at its
top imports inside a worker too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from openflash.errors import FlashError

__all__ = ["FlashApp", "ResourceManager", "use_remote"]

_decorator: list[Callable[..., Any]] = []


def use_remote(remote: Callable[..., Any]) -> None:
    """Set the decorator ``FlashApp.remote`` applies: openflash's ``remote`` in the process that
    owns the pools (api/remote.py), the light client's inside a worker (workers/client.py)."""
    _decorator[:] = [remote]


def _key(resource: Any) -> str:
    return f"{type(resource).__name__}:{getattr(resource, 'name', None) or '?'}"


_CLOUD_ONLY = {
    "create_environment": "creates an environment of the app on Runpod's cloud",
    "deploy_build_to_environment": "deploys an uploaded build to Runpod's cloud",
    "upload_build": "uploads a build tarball to Runpod's cloud",
    "delete_environment": "deletes an environment on Runpod's cloud",
    "list_builds": "lists the builds uploaded to Runpod's cloud",
    "get_environment_by_name": "reads an environment on Runpod's cloud",
    "list_environments": "lists the app's environments on Runpod's cloud",
    "get_build_manifest": "reads a build's manifest on Runpod's cloud",
    "update_build_manifest": "changes a build's manifest on Runpod's cloud",
    "from_name": "finds the app on Runpod's cloud",
    "create": "creates the app on Runpod's cloud",
    "get_or_create": "finds or creates the app on Runpod's cloud",
    "create_environment_and_app": "creates the app and an environment on Runpod's cloud",
    "list": "lists your apps on Runpod's cloud",
    "delete": "deletes the app on Runpod's cloud",
}


def _cloud_only(name: str) -> FlashError:
    return FlashError(
        f"FlashApp.{name}() {_CLOUD_ONLY[name]}, which openflash does not reach",
        hint="run the project here with `flash run` (or call its functions from Python); "
        "`flash build` makes an image of it to run elsewhere",
    )


class _CloudOnly:
    """A FlashApp operation that only exists on Runpod's cloud: calling it raises."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise _cloud_only(self.name)

        return refuse


class FlashApp:
    """A Flash app: ``name``, ``id`` (empty: no cloud app) and ``resources`` (the configs its
    ``remote`` decorated, by key). ``eager_hydrate`` is accepted and ignored (hydration reads the
    app from Runpod's cloud)."""

    def __init__(self, name: str, id: str | None = "", eager_hydrate: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise FlashError(f"FlashApp(name={name!r}) needs a name", hint="FlashApp('my-app')")
        self.name, self.id = name, id
        self.resources: dict[str, Any] = {}

    def remote(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """``remote(...)``, recording the resource config in ``resources``."""
        config = kwargs.get("resource_config", args[0] if args else None)
        if config is not None:
            self.resources[_key(config)] = config
        if not _decorator:
            raise FlashError("no remote decorator is set up", hint="import openflash first")
        decorate: Callable[[Any], Any] = _decorator[0](*args, **kwargs)
        return decorate

    create_environment = _CloudOnly()
    deploy_build_to_environment = _CloudOnly()
    upload_build = _CloudOnly()
    delete_environment = _CloudOnly()
    list_builds = _CloudOnly()
    get_environment_by_name = _CloudOnly()
    list_environments = _CloudOnly()
    get_build_manifest = _CloudOnly()
    update_build_manifest = _CloudOnly()
    from_name = _CloudOnly()
    create = _CloudOnly()
    get_or_create = _CloudOnly()
    create_environment_and_app = _CloudOnly()
    list = _CloudOnly()
    delete = _CloudOnly()

    def __repr__(self) -> str:
        return f"FlashApp(name={self.name!r}, resources={sorted(self.resources)})"


class ResourceManager:
    """The resource configs this process tracks (one manager per process, as Runpod's is a
    singleton), keyed ``"{ConfigClass}:{name}"``."""

    _shared: ClassVar[ResourceManager | None] = None
    _resources: dict[str, Any]

    def __new__(cls) -> ResourceManager:
        if cls._shared is None:
            cls._shared = super().__new__(cls)
            cls._shared._resources = {}
        return cls._shared

    async def register_resource(self, resource: Any) -> str:
        """Track ``resource``; its key."""
        key = _key(resource)
        self._resources[key] = resource
        return key

    async def get_or_deploy_resource(self, config: Any) -> Any:
        """The tracked config of ``config``'s key (``config`` itself, tracked now, the first
        time). Nothing is deployed: the endpoint's workers start at its first call."""
        return self._resources.setdefault(_key(config), config)

    def list_all_resources(self) -> dict[str, Any]:
        return dict(self._resources)

    def find_resources_by_name(self, name: str) -> list[tuple[str, Any]]:
        return [(k, r) for k, r in self._resources.items() if getattr(r, "name", None) == name]

    def find_resources_by_provider_id(self, provider_id: str) -> list[tuple[str, Any]]:
        """Configs whose ``id`` (Runpod's endpoint id, kept as given) is ``provider_id``."""
        return [(k, r) for k, r in self._resources.items() if getattr(r, "id", None) == provider_id]

    async def undeploy_resource(
        self, resource_id: str, resource_name: str | None = None, force_remove: bool = False
    ) -> dict[str, Any]:
        """Stop tracking ``resource_id``: Runpod's result shape (``success``, ``name``,
        ``endpoint_id``, ``message``). Its workers, if any run, stop after ``idleTimeout``."""
        resource = self._resources.pop(resource_id, None)
        if resource is None:
            return {
                "success": False,
                "name": resource_name or "Unknown",
                "endpoint_id": "N/A",
                "message": f"Resource {resource_id} not found in tracking",
            }
        return {
            "success": True,
            "name": resource_name or getattr(resource, "name", "Unknown"),
            "endpoint_id": getattr(resource, "id", None) or "N/A",
            "message": f"{resource_id} is no longer tracked (nothing was deployed: its workers "
            "run on this machine and stop when idle)",
        }
