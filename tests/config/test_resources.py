from __future__ import annotations

import logging

import pytest

from openflash import (
    CpuInstanceType,
    CpuLiveServerless,
    CpuServerlessEndpoint,
    GpuGroup,
    GpuType,
    LiveServerless,
    ServerlessEndpoint,
)
from openflash.errors import ConfigError


def test_gpu_defaults_follow_runpod_flash() -> None:
    c = LiveServerless(name="w")
    assert c.gpus == [GpuGroup.ANY]
    assert (c.gpuCount, c.workersMin, c.workersMax, c.idleTimeout, c.executionTimeoutMs) == (
        1,
        0,
        1,
        60,
        0,
    )
    assert not c.is_cpu and c.gpu_count == 1 and c.execution_timeout_s is None


def test_cpu_defaults() -> None:
    c = CpuLiveServerless(name="w")
    assert c.instanceIds == [CpuInstanceType.CPU3G_2_8]
    assert c.is_cpu and c.gpu_count == 0
    assert c.cpu_instance is not None and (c.cpu_instance.vcpus, c.cpu_instance.memory_gib) == (
        2,
        8,
    )
    assert (
        CpuLiveServerless(name="w", instanceIds=["cpu5c-4-8"]).cpu_instance
        == CpuInstanceType.CPU5C_4_8
    )


def test_user_guide_custom_image_config_loads() -> None:
    custom = ServerlessEndpoint(
        name="custom_image_worker",
        dockerImage="myregistry/my-image:v1.0",
        gpuIds=["NVIDIA GeForce RTX 4090"],
    )
    assert custom.imageName == "myregistry/my-image:v1.0" and custom.image == custom.imageName
    assert ServerlessEndpoint(name="x", imageName="a:b").image == "a:b"
    # Live configs run on the standard image, as in Runpod Flash.
    assert LiveServerless(name="x", imageName="a:b").image is None


@pytest.mark.parametrize(
    "gpu_ids",
    [
        "NVIDIA GeForce RTX 4090",
        "ADA_24,AMPERE_80",
        ["NVIDIA H100 80GB HBM3", "AMPERE_48"],
        "NVIDIA L4,-NVIDIA GeForce RTX 3090",
        "any",
    ],
)
def test_gpu_ids_accept_types_groups_and_exclusions(gpu_ids: object) -> None:
    LiveServerless(name="x", gpuIds=gpu_ids)


def test_gpus_accept_enum_members() -> None:
    c = LiveServerless(name="x", gpus=[GpuGroup.ADA_24, GpuType.NVIDIA_L4], gpuCount=2)
    assert c.gpu_count == 2


def test_cloud_only_fields_are_accepted_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="openflash"):
        c = LiveServerless(
            name="x",
            datacenter="EU-RO-1",
            flashboot=True,
            scalerType="QUEUE_DELAY",
            scalerValue=4,
            networkVolumeId="vol",
            templateId="t",
            locations="US",
        )
    assert c.name == "x"
    assert "datacenter='EU-RO-1' only applies on Runpod's cloud; ignored" in caplog.text


@pytest.mark.parametrize(
    ("fields", "message", "hint"),
    [
        (
            {"workersMin": 3, "workersMax": 1},
            "workersMin (3) cannot be greater than workersMax (1)",
            "workersMin <= workersMax",
        ),
        ({"workersMin": -1}, "workersMin=-1 is negative", "workersMin"),
        ({"workersMax": 0}, "workersMax=0 must be at least 1", "workersMax"),
        ({"idleTimeout": -5}, "idleTimeout=-5 must be between 1 and 3600 seconds", "seconds"),
        ({"executionTimeoutMs": -1}, "executionTimeoutMs=-1 is negative", "0 means no limit"),
        ({"gpuIds": "NVIDIA RTX 9999"}, "unknown GPU 'NVIDIA RTX 9999'", "GpuType values"),
        ({"gpuIds": ["ADA_24", "HOPPER_999"]}, "unknown GPU 'HOPPER_999'", "GpuGroup names"),
        ({"gpuCount": 0}, "gpuCount=0 must be at least 1", "number of GPUs"),
        (
            {"instanceIds": ["cpu3c-1-3"]},
            "unknown CPU instance type 'cpu3c-1-3'; did you mean",
            "CpuInstanceType",
        ),
        ({"workerMax": 2}, "unknown field 'workerMax'; did you mean 'workersMax'?", "spelling"),
        (
            {"env": {"1BAD": "x"}},
            "'1BAD' is not a valid environment variable name",
            "variable names",
        ),
        ({"workersMax": "many"}, "workersMax='many'", "workersMax"),
    ],
)
def test_invalid_values_name_the_field_and_value(fields: dict, message: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        LiveServerless(name="w", **fields)
    assert "invalid LiveServerless(name='w')" in info.value.message
    assert message in info.value.message
    assert hint in info.value.hint
    assert isinstance(info.value, ValueError)


def test_name_is_required() -> None:
    with pytest.raises(ConfigError, match="name is required"):
        CpuServerlessEndpoint()  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="name is empty"):
        LiveServerless(name=" ")
