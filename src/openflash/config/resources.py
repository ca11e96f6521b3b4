"""Resource configs: pydantic models with Runpod Flash's class and field names.

Field names are camelCase as in Runpod Flash. Fields that only mean something on Runpod's cloud
(datacenter, flashboot, templates, scaler settings, volume ids, ...) are accepted and ignored
with a debug log line, so that real programs load; a ``networkVolume`` with a name is a local
folder its workers share. Any other unknown field, and every invalid
value, raises ``ConfigError`` naming the field and the value.
"""

from __future__ import annotations

import difflib
import logging
import re
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from openflash.config.hardware import CpuInstanceType, GpuGroup, GpuType
from openflash.config.limits import (
    ENDPOINT_NAME,
    INT_LIMITS,
    check_env_size,
    check_integer,
    shown,
)
from openflash.errors import ConfigError

__all__ = [
    "CpuLiveLoadBalancer",
    "CpuLiveServerless",
    "CpuLoadBalancerSlsResource",
    "CpuServerlessEndpoint",
    "LiveLoadBalancer",
    "LiveServerless",
    "LoadBalancerSlsResource",
    "NetworkVolume",
    "PodTemplate",
    "ServerlessEndpoint",
    "ServerlessResource",
]

logger = logging.getLogger("openflash")

DEFAULT_WORKERS_MIN = 0
DEFAULT_WORKERS_MAX = 1

#: Accepted for compatibility, meaningless off Runpod's cloud.
CLOUD_ONLY_FIELDS = frozenset(
    {
        "activeBuildid",
        "aiKey",
        "allowedCudaVersions",
        "computeType",
        "createdAt",
        "cudaVersions",
        "datacenter",
        "flashBootType",
        "flashEnvironmentId",
        "flashboot",
        "hubRelease",
        "id",
        "locations",
        "minCudaVersion",
        "networkVolumeId",
        "networkVolumes",
        "repo",
        "scalerType",
        "scalerValue",
        "template",
        "templateId",
        "type",
        "unrestrictedLocations",
        "userId",
        "workersPFBTarget",
    }
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_HINTS = {
    "name": "an endpoint's name names files, routes and log lines: use 1 to 128 letters, "
    f"digits, '_', '.' and '-', not starting with '.' or '-' (the pattern {ENDPOINT_NAME.pattern}"
    "), e.g. name='my-worker'",
    "workersMin": "use 0 <= workersMin <= workersMax",
    "workersMax": "use workersMax >= 1 and >= workersMin",
    "idleTimeout": "idleTimeout is in seconds, between 1 and 3600",
    "executionTimeoutMs": "executionTimeoutMs is in milliseconds, at most 30 days "
    f"({INT_LIMITS['executionTimeoutMs']}); 0 means no limit",
    "gpuCount": "gpuCount is the number of GPUs per worker, from 1 to 64",
    "gpus": "use GpuGroup or GpuType members, e.g. gpus=[GpuGroup.ADA_24]",
    "gpuIds": "use GpuType values ('NVIDIA GeForce RTX 4090') or GpuGroup names ('ADA_24')",
    "instanceIds": "use CpuInstanceType members, e.g. instanceIds=[CpuInstanceType.CPU3G_2_8]",
    "env": "env maps variable names (letters, digits, _) to string values, each small enough "
    "for a process environment (Linux: 128 KiB a variable); pass large data as an argument or "
    "in a file on a volume",
    "unknown": "fix the field's spelling, or remove it",
}


class _Model(BaseModel):
    """Turns pydantic's ValidationError into a ConfigError that names the field and value."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _config_error(type(self).__name__, data, e) from None


class NetworkVolume(_Model):
    """A Runpod network volume. Here, one named folder (``FLASH_VOLUMES/<name>``) that every
    endpoint naming it sees at ``/runpod-volume`` (``openflash.backends.volumes``); ``id`` and
    ``size`` only mean something on Runpod's cloud."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = None
    id: str | None = None
    size: int | None = 100

    @field_validator("name")
    @classmethod
    def _check_volume_name(cls, value: str | None) -> str | None:
        if value is not None and (not _VOLUME_NAME.fullmatch(value) or value in (".", "..")):
            raise ValueError(f"volume name {value!r} is not a folder name")
        return value


_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ServerlessResource(_Model):
    """A GPU endpoint: ``name`` plus scaling, timeout and hardware settings."""

    _is_cpu: ClassVar[bool] = False
    _honours_image: ClassVar[bool] = True

    name: str
    gpus: list[GpuGroup | GpuType] | None = Field(
        default_factory=lambda: list[GpuGroup | GpuType]([GpuGroup.ANY])
    )
    gpuIds: str | list[str] | None = None
    gpuCount: int = 1
    instanceIds: list[CpuInstanceType] | None = None
    workersMin: int = DEFAULT_WORKERS_MIN
    workersMax: int = DEFAULT_WORKERS_MAX
    idleTimeout: int = 60
    executionTimeoutMs: int = 0
    env: dict[str, str] | None = None
    imageName: str | None = Field(default=None, alias="dockerImage")
    python_version: str | None = None
    #: The volume its workers see at /runpod-volume (None: none).
    networkVolume: NetworkVolume | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_cloud_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields) | {"dockerImage"}
        kept = {}
        for key, value in data.items():
            if key in CLOUD_ONLY_FIELDS:
                logger.debug(
                    "%s: %s=%r only applies on Runpod's cloud; ignored", cls.__name__, key, value
                )
            elif key not in known:
                close = difflib.get_close_matches(key, sorted(known | CLOUD_ONLY_FIELDS), n=1)
                suggestion = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown field {key!r}{suggestion}")
            else:
                kept[key] = value
        return kept

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name is empty")
        if not ENDPOINT_NAME.fullmatch(value):
            raise ValueError(f"not a valid endpoint name (the pattern is {ENDPOINT_NAME.pattern})")
        return value

    @field_validator(*INT_LIMITS, mode="before")
    @classmethod
    def _check_integer(cls, value: Any, info: ValidationInfo) -> Any:
        return check_integer(str(info.field_name), value)

    @field_validator("gpuIds", mode="before")
    @classmethod
    def _check_gpu_ids(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        items = value.split(",") if isinstance(value, str) else list(value)
        for item in items:
            _parse_gpu(str(item).strip())
        return value

    @field_validator("instanceIds", mode="before")
    @classmethod
    def _check_instances(cls, value: Any) -> Any:
        if value is None:
            return None
        items = [value] if isinstance(value, (str, CpuInstanceType)) else list(value)
        valid = [c.value for c in CpuInstanceType]
        for item in items:
            text = item.value if isinstance(item, CpuInstanceType) else str(item)
            if text not in valid:
                close = difflib.get_close_matches(text, valid, n=1)
                suggestion = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown CPU instance type {text!r}{suggestion}")
        return [CpuInstanceType(i) for i in items]

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if "\0" in item:
                raise ValueError(f"the value of {key!r} contains a NUL byte")
        check_env_size(value or {})
        return value

    @model_validator(mode="after")
    def _check_ranges(self) -> ServerlessResource:
        if self.workersMin < 0:
            raise ValueError(f"workersMin={self.workersMin} is negative")
        if self.workersMax < 1:
            raise ValueError(f"workersMax={self.workersMax} must be at least 1")
        if self.workersMin > self.workersMax:
            raise ValueError(
                f"workersMin ({self.workersMin}) cannot be greater than workersMax "
                f"({self.workersMax})"
            )
        if not 1 <= self.idleTimeout <= 3600:
            raise ValueError(f"idleTimeout={self.idleTimeout} must be between 1 and 3600 seconds")
        if self.executionTimeoutMs < 0:
            raise ValueError(f"executionTimeoutMs={self.executionTimeoutMs} is negative")
        if not self._is_cpu and self.gpuCount < 1:
            raise ValueError(f"gpuCount={self.gpuCount} must be at least 1")
        return self

    # What the local runtime reads.

    @property
    def is_cpu(self) -> bool:
        return self._is_cpu or bool(self.instanceIds)

    @property
    def gpu_count(self) -> int:
        return 0 if self.is_cpu else self.gpuCount

    @property
    def cpu_instance(self) -> CpuInstanceType | None:
        return self.instanceIds[0] if self.is_cpu and self.instanceIds else None

    @property
    def image(self) -> str | None:
        return self.imageName if self._honours_image else None

    @property
    def execution_timeout_s(self) -> float | None:
        return self.executionTimeoutMs / 1000 if self.executionTimeoutMs else None


class ServerlessEndpoint(ServerlessResource):
    """A GPU endpoint that may name its own image (``dockerImage``/``imageName``)."""


class LiveServerless(ServerlessResource):
    """A GPU endpoint on the standard worker image (``imageName`` is ignored, as in Flash)."""

    _honours_image: ClassVar[bool] = False


class CpuServerlessEndpoint(ServerlessResource):
    """A CPU endpoint: ``instanceIds`` picks the size (vCPUs and memory)."""

    _is_cpu: ClassVar[bool] = True

    gpus: list[GpuGroup | GpuType] | None = None
    gpuCount: int = 0
    instanceIds: list[CpuInstanceType] | None = Field(
        default_factory=lambda: [CpuInstanceType.CPU3G_2_8]
    )


class CpuLiveServerless(CpuServerlessEndpoint):
    """A CPU endpoint on the standard worker image."""

    _honours_image: ClassVar[bool] = False


class LoadBalancerSlsResource(ServerlessEndpoint):
    """A route-style (load-balanced) GPU endpoint."""


class LiveLoadBalancer(LoadBalancerSlsResource):
    _honours_image: ClassVar[bool] = False


class CpuLoadBalancerSlsResource(CpuServerlessEndpoint):
    """A route-style (load-balanced) CPU endpoint."""


class CpuLiveLoadBalancer(CpuLoadBalancerSlsResource):
    _honours_image: ClassVar[bool] = False


class PodTemplate(_Model):
    """A Runpod pod template: accepted so programs load; it has no local effect."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = None
    imageName: str | None = None


def _parse_gpu(text: str) -> GpuGroup | GpuType | None:
    """A GpuGroup or GpuType from its name or value; ``-X`` (an exclusion) yields None."""
    if text.startswith("-"):
        _parse_gpu(text[1:].strip())
        return None
    for enum in (GpuGroup, GpuType):
        for member_name, member in enum.__members__.items():
            if text in (member.value, member_name):
                return member
    names = [g.value for g in GpuGroup] + [g.value for g in GpuType]
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.5)
    suggestion = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown GPU {text!r}{suggestion}")


def _config_error(cls_name: str, data: dict[str, Any], error: ValidationError) -> ConfigError:
    problems = []
    fields = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            fields.append(loc)
            problems.append(f"{loc} is required")
        elif loc:
            fields.append(str(item["loc"][0]))
            problems.append(f"{loc}={shown(item['input'])}: {msg}")
        elif msg.startswith("unknown field"):
            fields.append("unknown")
            problems.append(msg)
        else:  # a check across fields: its message starts with the field it blames
            fields.append(re.split(r"[\s=(]", msg, maxsplit=1)[0])
            problems.append(msg)
    name = data.get("name")
    label = f"{cls_name}(name={shown(name)})" if isinstance(name, str) else cls_name
    hints = [_HINTS[f] for f in dict.fromkeys(fields) if f in _HINTS]
    return ConfigError(
        f"invalid {label}: " + "; ".join(problems),
        hint="; ".join(hints) or "check the field names and values against Runpod Flash's",
    )
