"""What a worker's ERROR reply becomes for the caller: a RemoteError with a hint that says what
to add (a Python package the code imports, the Debian package of a missing library, or, for a
missing file under /usr or /etc, the layer mode and the declared system packages)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openflash._settings import Settings
from openflash.deps.imports import distribution_for_module
from openflash.deps.libraries import missing_library, package_for_library
from openflash.deps.missing_files import missing_file_hint, missing_system_file
from openflash.deps.namespace_mode import layer_mode
from openflash.errors import RemoteError
from openflash.workers import protocol
from openflash.workers.calls import Call

if TYPE_CHECKING:
    from openflash.runtime.definitions import EndpointDef

__all__ = ["remote_error"]


def remote_error(endpoint: EndpointDef, call: Call, info: protocol.ErrorInfo) -> RemoteError:
    original = protocol.load_exception(info.get("exception"))
    message = f"{info['type']}: {info['message']}" if info["message"] else info["type"]
    fields: dict[str, Any] = {
        "exc_type": info["type"],
        "remote_traceback": info["traceback"],
        "missing_module": info.get("missing_module"),
    }
    missing = info.get("missing_module")
    library = missing_library(info["message"])
    if library:
        package = package_for_library(library)
        fields["hint"] = (
            f'{library} is in the Debian package "{package}": add it to '
            f"system_dependencies=[...] of endpoint {endpoint.name!r}"
        )
    elif (path := missing_system_file(f"{info['message']}\n{info['traceback']}")) is not None:
        mode = layer_mode(Settings.from_env().namespaces)
        deps = list(endpoint.system_dependencies)
        fields["hint"] = missing_file_hint(path, mode, endpoint.name, deps)
    elif missing:
        dist = distribution_for_module(missing)
        fields["hint"] = (
            f'add "{dist}" to dependencies=[...] of endpoint {endpoint.name!r}'
            if dist not in _dependency_names(endpoint)
            else f"{dist!r} is in dependencies=[...], but it does not provide {missing!r}: "
            "check its version and extras"
        )
    return RemoteError.wrap(
        original,
        f"{message}\n(raised by {call.label} on endpoint {endpoint.name!r})",
        **fields,
    )


def _dependency_names(endpoint: EndpointDef) -> set[str]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return {canonicalize_name(Requirement(d).name) for d in endpoint.dependencies}
