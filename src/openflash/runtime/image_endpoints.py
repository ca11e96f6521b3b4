"""Preparing an endpoint with a ``dockerImage``: its lock, the engine, and the image to run.

Its Python dependencies are resolved here as for any endpoint (flash.lock wins); its system
dependencies go to apt inside the derived image, not to a layer of this machine's. Everything
here runs in the runtime's build threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from openflash._settings import Settings
from openflash.backends.targets import ContainerTarget, RayTarget
from openflash.envs.engine import NoEngineError, find_engine
from openflash.envs.images import ImageFor, prepare_image
from openflash.envs.store import content_key
from openflash.errors import FlashError
from openflash.prepare import DependencyKey, Prepared, Preparer
from openflash.runtime.worker_specs import resource_fields
from openflash.workers.port import WorkerSpec

if TYPE_CHECKING:
    from openflash.runtime.definitions import EndpointDef

__all__ = [
    "ImageKey",
    "PreparedImage",
    "image_spec",
    "local_image_target",
    "prepare_image_endpoint",
    "ray_image_target",
]


@dataclass(frozen=True, slots=True)
class ImageKey:
    """What an image endpoint's preparation is done once for: its image (a name as the user
    wrote it) and its dependency sets."""

    image: str
    dependencies: DependencyKey


@dataclass(frozen=True)
class PreparedImage:
    prepared: Prepared
    image: ImageFor
    runtime_path: Path


def prepare_image_endpoint(endpoint: EndpointDef, preparer: Preparer) -> PreparedImage:
    """Resolve ``endpoint``'s lock (the preparer; its system dependencies go to the image) and
    derive its image with it. Raises FlashError without a container engine or a usable image."""
    settings = preparer.settings
    image = endpoint.resource.image
    assert image is not None
    try:
        engine = find_engine(settings.container_engine)
    except NoEngineError as e:
        named = f" ({settings.container_engine})" if settings.container_engine else ""
        raise FlashError(
            f"endpoint {endpoint.name!r} runs in the image {image!r}, and no container "
            f"engine{named} was found: {e.message}",
            hint="install podman (apt-get install podman) or docker, or set "
            "FLASH_CONTAINER_ENGINE to one; or drop dockerImage/imageName to run in a local "
            "environment built from dependencies=[...]",
        ) from None
    prepared = preparer.build(
        DependencyKey(endpoint.dependencies, (), endpoint.lockfile, options=endpoint.options),
        local=False,
    )
    try:
        chosen = prepare_image(
            preparer.store,
            engine,
            image,
            prepared.lock.text,
            endpoint.system_dependencies,
            uv_cache=settings.uv_cache_dir,
        )
    except FlashError as e:
        e.message = f"endpoint {endpoint.name!r} (image {image!r}): {e.message}"
        e.args = (e.message,)
        raise
    return PreparedImage(prepared, chosen, preparer.worker_runtime())


def local_image_target(ready: PreparedImage) -> ContainerTarget:
    """A container of the image derived here."""
    return ContainerTarget(ready.image.image, ready.image.python, ready.runtime_path)


def ray_image_target(endpoint: EndpointDef, prepared: Prepared) -> RayTarget:
    """A container of the endpoint's image, derived on the Ray node that runs it (once per
    node and key) with the lock resolved here."""
    image = endpoint.resource.image
    assert image is not None
    system = tuple(endpoint.system_dependencies)
    key = content_key("ray-image", image, prepared.env_key, system)
    return RayTarget(prepared.lock.text, key, None, image=image, image_system=system)


def image_spec(
    endpoint: EndpointDef, target: ContainerTarget | RayTarget, settings: Settings
) -> WorkerSpec:
    """How to start a worker of ``endpoint`` in its (derived) image."""
    r = endpoint.resource
    return WorkerSpec(
        **resource_fields(endpoint, settings),
        target=target,
        env=dict(r.env or {}),
        memory_gib=r.cpu_instance.memory_gib if r.cpu_instance else None,
    )
