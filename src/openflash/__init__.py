"""openflash: run Flash-style remote functions with per-function dependencies on your hardware.

    from openflash import CpuInstanceType, Endpoint

    @Endpoint(name="stats", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["numpy<2.0.0"])
    async def stats(values: list[float]) -> dict:
        import numpy as np
        return {"mean": float(np.mean(values))}

Everything public is importable from here; the modules beneath are private.
"""

from openflash._version import __version__
from openflash.api.endpoint import Endpoint
from openflash.api.progress import on_progress
from openflash.api.remote import remote
from openflash.api.requirements import requirements
from openflash.api.retries import Retries
from openflash.api.short_errors import install as _short_errors
from openflash.config.hardware import (
    CPU_DATACENTERS,
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    GpuGroup,
    GpuType,
    ServerlessScalerType,
    ServerlessType,
)
from openflash.config.resources import (
    DEFAULT_WORKERS_MAX,
    DEFAULT_WORKERS_MIN,
    CpuLiveLoadBalancer,
    CpuLiveServerless,
    CpuLoadBalancerSlsResource,
    CpuServerlessEndpoint,
    LiveLoadBalancer,
    LiveServerless,
    LoadBalancerSlsResource,
    NetworkVolume,
    PodTemplate,
    ServerlessEndpoint,
)
from openflash.errors import (
    ConfigError,
    DeadlockError,
    DependencyConflictError,
    DependencyError,
    EnvironmentBuildError,
    ExecutionTimeoutError,
    FlashError,
    RemoteError,
    StoreFullError,
    StorePermissionError,
    SystemDependencyError,
    WorkerCrashedError,
)
from openflash.runtime.process import configure
from openflash.workers.flash_apps import FlashApp, ResourceManager
from openflash.workers.portable import register_portable
from openflash.workers.serverless_client import EndpointJob
from openflash.workers.streaming import progress

__all__ = [
    "CPU_DATACENTERS",
    "DEFAULT_WORKERS_MAX",
    "DEFAULT_WORKERS_MIN",
    "ConfigError",
    "CpuInstanceType",
    "CpuLiveLoadBalancer",
    "CpuLiveServerless",
    "CpuLoadBalancerSlsResource",
    "CpuServerlessEndpoint",
    "CudaVersion",
    "DataCenter",
    "DeadlockError",
    "DependencyConflictError",
    "DependencyError",
    "Endpoint",
    "EndpointJob",
    "EnvironmentBuildError",
    "ExecutionTimeoutError",
    "FlashApp",
    "FlashError",
    "GpuGroup",
    "GpuType",
    "LiveLoadBalancer",
    "LiveServerless",
    "LoadBalancerSlsResource",
    "NetworkVolume",
    "PodTemplate",
    "RemoteError",
    "ResourceManager",
    "Retries",
    "ServerlessEndpoint",
    "ServerlessScalerType",
    "ServerlessType",
    "StoreFullError",
    "StorePermissionError",
    "SystemDependencyError",
    "WorkerCrashedError",
    "__version__",
    "configure",
    "on_progress",
    "progress",
    "register_portable",
    "remote",
    "requirements",
]

# An uncaught FlashError prints as the user's line, its message and hint (api/short_errors.py).
_short_errors()
