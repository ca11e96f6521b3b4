"""Which pool serves an endpoint: the runtime's key from what its workers are to one pool.

Endpoints of one name whose workers would be interchangeable share a pool (its warm workers
serve them all); any difference a worker would notice (another environment, layer or image,
another config, other variables, GPUs, CPUs, folders, or project fingerprint) makes another pool,
and ``Runtime.refresh`` retires the pool it replaces.

The key lives in the runtime because the runtime alone maps endpoints to pools: the pool does not
know its key, and a backend keys what it keeps (templates, backends/templates.py ``TemplateKey``)
by what it starts a worker from, a ``WorkerSpec``, which these keys are made from too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openflash.backends.targets import ContainerTarget
from openflash.workers.pool import PoolConfig
from openflash.workers.port import WorkerSpec

__all__ = ["PoolKey"]


@dataclass(frozen=True, slots=True)
class PoolKey:
    """One pool's identity: equal keys, interchangeable workers."""

    endpoint: str
    config: PoolConfig
    #: The environment's content key ("" for a container pool: the image holds it).
    environment: str
    #: The system layer's content key ("" for none, and for a container pool).
    layer: str
    #: The image a container pool runs, else None.
    image: str | None
    #: The worker's variables, as sorted items.
    env: tuple[tuple[str, str], ...]
    gpu_count: int
    gpu_types: tuple[str, ...]
    vcpus: int | None
    cwd: Path
    project: Path | None
    project_digest: str

    @classmethod
    def of(
        cls, config: PoolConfig, spec: WorkerSpec, *, environment: str = "", layer: str = ""
    ) -> PoolKey:
        """The key of a pool of ``config`` starting workers of ``spec`` (in ``environment``
        and ``layer``, the content keys of what was prepared for it)."""
        target = spec.target
        return cls(
            endpoint=spec.endpoint,
            config=config,
            environment=environment,
            layer=layer,
            image=target.image if isinstance(target, ContainerTarget) else None,
            env=tuple(sorted(spec.env.items())),
            gpu_count=spec.gpu_count,
            gpu_types=spec.gpu_types,
            vcpus=spec.vcpus,
            cwd=spec.cwd,
            project=spec.project,
            project_digest=spec.project_digest,
        )
