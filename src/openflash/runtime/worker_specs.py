"""What an endpoint's workers start with: the ``WorkerSpec`` of a prepared endpoint, and where
they run (``LocalTarget``: the environment built here; ``RayTarget``: the lock, for a node)."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from openflash._settings import Settings
from openflash.backends.gpu_types import gpu_types_of
from openflash.backends.targets import LocalTarget, RayTarget
from openflash.config.volumes import volume_folder
from openflash.envs.preload_records import PreloadRecord
from openflash.errors import FlashError
from openflash.prepare import Prepared
from openflash.runtime.definitions import EndpointDef
from openflash.runtime.nested_calls import project_digest
from openflash.workers.port import WorkerSpec

__all__ = ["ResourceFields", "resource_fields", "target_of", "worker_spec"]


class ResourceFields(TypedDict):
    """The ``WorkerSpec`` fields every endpoint's workers take from its resource config and the
    settings, whatever runs them (an environment built here, a node, an image)."""

    endpoint: str
    cwd: Path
    gpu_count: int
    gpu_types: tuple[str, ...]
    vcpus: int | None
    max_concurrency: int
    max_rss: int | None
    project: Path | None
    volume: Path | None


def resource_fields(endpoint: EndpointDef, settings: Settings) -> ResourceFields:
    """What ``endpoint``'s resource config and ``settings`` say of its workers."""
    r = endpoint.resource
    return ResourceFields(
        endpoint=endpoint.name,
        cwd=endpoint.cwd,
        gpu_count=r.gpu_count,
        gpu_types=gpu_types_of(r.gpus) if r.gpu_count else (),
        vcpus=r.cpu_instance.vcpus if r.cpu_instance else None,
        max_concurrency=endpoint.max_concurrency,
        max_rss=settings.worker_max_rss,
        project=endpoint.project,
        volume=volume_folder(settings, r),
    )


def worker_spec(
    endpoint: EndpointDef,
    prepared: Prepared,
    settings: Settings,
    record: PreloadRecord | None,
    *,
    local: bool,
) -> WorkerSpec:
    """The spec of ``endpoint``'s workers, on a backend that builds here (``local``) or not;
    ``record`` is its learned preload (runtime/preload.py)."""
    return WorkerSpec(
        **resource_fields(endpoint, settings),
        target=target_of(endpoint, prepared, local=local),
        env={**prepared.layer.env, **(endpoint.resource.env or {})},
        paths=dict(prepared.layer.paths),
        layer=prepared.layer.path,
        preload=endpoint.preload,
        project_digest=(
            project_digest(endpoint.project, endpoint.preload) if endpoint.project else ""
        ),
        learned_preload=record.path if record else None,
    )


def target_of(endpoint: EndpointDef, prepared: Prepared, *, local: bool) -> LocalTarget | RayTarget:
    """Where the backend runs ``endpoint``'s workers: in the environment built here, or
    (a backend whose workers build their own) from the lock and system layer resolved here."""
    if not local:
        return RayTarget(
            prepared.lock.text, prepared.env_key, prepared.system_lock, options=prepared.options
        )
    if prepared.environment is None or prepared.runtime_path is None:
        raise FlashError(
            f"endpoint {endpoint.name!r} has no environment on this machine",
            hint="this is a bug in openflash: please report it",
        )
    return LocalTarget(prepared.environment.python, prepared.runtime_path)
