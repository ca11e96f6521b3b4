"""An endpoint as the runtime knows it: one decorated function or class, its config and its
validated dependency sets (built by api/ at decoration, read by the runtime, the CLI and the
server)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from openflash._settings import worker_start_timeout
from openflash.config.resources import ServerlessResource
from openflash.deps.lockfile import find_lockfile
from openflash.deps.project_lock import ProjectLock, project_lock
from openflash.envs.uv_options import NO_OPTIONS, UvOptions
from openflash.runtime.nested_calls import project_root
from openflash.workers.pool import PoolConfig

__all__ = ["EndpointDef"]


@dataclass(frozen=True, eq=False)
class EndpointDef:
    """One decorated function or class: its config and validated dependency sets."""

    name: str
    resource: ServerlessResource
    dependencies: tuple[str, ...]
    system_dependencies: tuple[str, ...] = ()
    max_concurrency: int = 1
    cwd: Path = field(default_factory=Path.cwd)
    #: The folder of the decorated function's file: where its project's flash.lock is looked for.
    source_dir: Path | None = None
    #: What a worker template imports before forking workers (workers/forkserver.py).
    preload: tuple[str, ...] = ()
    #: Install options (index URLs, find-links, torch backend, build flags), the project's
    #: ``[tool.openflash]`` defaults merged in at decoration.
    options: UvOptions = NO_OPTIONS
    #: The modules its code imports, dotted (runtime/preload.py's ``imported_modules``).
    imports: tuple[str, ...] = ()

    @property
    def gpu_imports(self) -> tuple[str, ...]:
        """What the GPU base set is matched against (deps/gpu_base.py): its imports if it
        asks for a GPU; none for a CPU endpoint, which never gets the base set, nor for one
        with its own image (``dockerImage``: that image is its base)."""
        r = self.resource
        return () if r.is_cpu or r.image else self.imports

    @property
    def wants_gpu(self) -> bool:
        """Whether its workers ask for a GPU (what ``torch_backend="auto"`` builds torch for)."""
        return not self.resource.is_cpu

    @property
    def lockfile(self) -> Path | None:
        return find_lockfile(self.source_dir or self.cwd)

    @property
    def uv_lock(self) -> ProjectLock | None:
        """Its project's ``uv.lock``, whose versions constrain its resolution, or None."""
        return project_lock(self.source_dir or self.cwd)

    @property
    def project(self) -> Path | None:
        """The folder its project's modules import from (on its workers' path)."""
        return project_root(self.source_dir) if self.source_dir else None

    def pool_config(self) -> PoolConfig:
        r = self.resource
        return PoolConfig(
            name=self.name,
            workers_min=r.workersMin,
            workers_max=r.workersMax,
            idle_timeout=float(r.idleTimeout),
            execution_timeout=r.execution_timeout_s,
            max_concurrency=self.max_concurrency,
            start_timeout=worker_start_timeout(),
        )
