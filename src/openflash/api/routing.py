"""Routes of load-balanced endpoints, in both of Runpod Flash's forms:

    api = Endpoint(name="api", cpu=...)            @remote(LiveLoadBalancer(name="api"),
    @api.post("/compute")                                  method="POST", path="/compute")
    async def compute(x: int) -> dict: ...         async def compute(x: int) -> dict: ...

Each is a ``Route``: ``flash run`` serves it at ``/{file}{path}`` (project.py finds it through
the ``Endpoint`` or, for the ``@remote`` form, the handle's ``__flash_route__``); awaited from
Python it runs on the endpoint's workers. ``local=True`` (as ``remote``'s) keeps the handler in
the calling process: ``flash run`` runs it in the server's own process, with the server's
packages.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from openflash.config.resources import CpuLoadBalancerSlsResource, LoadBalancerSlsResource
from openflash.errors import ConfigError

if TYPE_CHECKING:
    from openflash.api.remote import RemoteFunction

__all__ = ["METHODS", "RESERVED_PATHS", "Route", "check_route", "route_form"]

#: Paths the serving framework keeps for itself on a load-balanced endpoint.
RESERVED_PATHS = frozenset({"/execute", "/ping"})
#: The HTTP methods a route may have (Runpod Flash's).
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


@dataclass(frozen=True)
class Route:
    """One handler of a load-balanced endpoint: ``method path`` runs ``handle`` on a worker (or,
    ``local``, ``function`` in the serving process)."""

    method: str
    path: str
    function: Callable[..., Any]
    handle: RemoteFunction
    local: bool = False


def check_route(method: Any, path: Any, endpoint: str, where: str) -> str:
    """``method`` upper-cased, after checking it and ``path``; ConfigError names a bad one."""
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ConfigError(
            f"{where}: method={method!r} is not an HTTP method a route can have",
            hint=f"use one of {', '.join(METHODS)}",
        )
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(
            f"{where}: route path {path!r} must start with '/'", hint="e.g. '/process'"
        )
    if path.rstrip("/") in RESERVED_PATHS:
        raise ConfigError(
            f"{where}: route path {path!r} of endpoint {endpoint!r} is reserved",
            hint=f"reserved paths: {', '.join(sorted(RESERVED_PATHS))}; pick another",
        )
    return method.upper()


Decorate = Callable[[Any], Any]


def route_form(
    resource: Any, method: Any, path: Any, local: bool, routed: Decorate, plain: Decorate
) -> Decorate:
    """``remote(resource, method=..., path=...)``'s decorator: with a load-balancer config, the
    function becomes a route of its endpoint (``routed`` makes its handle; ``local`` returns the
    function itself, marked); with any other config the two are ignored with a warning, as
    Runpod Flash does, and ``plain`` decorates."""
    if not isinstance(resource, (LoadBalancerSlsResource, CpuLoadBalancerSlsResource)):
        logging.getLogger("openflash").warning(
            "remote(method=%r, path=%r) only applies to a load-balancer config such as "
            "LiveLoadBalancer; with %s it is ignored",
            method, path, type(resource).__name__,
        )  # fmt: skip
        return plain
    verb = check_route(method, path, resource.name, f"remote(method={method!r}, path={path!r})")

    def decorate(fn: Any) -> Any:
        if inspect.isclass(fn) or not callable(fn):
            raise ConfigError(
                f"remote(method={verb!r}, path={path!r}) decorates functions, not {fn!r}",
                hint="put it directly above a def or an async def",
            )
        handle = routed(fn)
        handle.__is_lb_route_handler__ = True
        target = fn if local else handle
        target.__flash_route__ = Route(verb, path, fn, handle, local=local)
        target.__is_lb_route_handler__ = True
        if local:
            target.__flash_local__ = True
        return target

    return decorate
