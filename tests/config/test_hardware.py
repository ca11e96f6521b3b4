from openflash import CpuInstanceType, GpuGroup, GpuType


def test_gpu_groups_match_runpod_flash() -> None:
    assert GpuGroup.ANY.value == "any"
    names = [
        "ADA_24",
        "ADA_32_PRO",
        "ADA_48_PRO",
        "ADA_80_PRO",
        "AMPERE_16",
        "AMPERE_24",
        "AMPERE_48",
        "AMPERE_80",
        "HOPPER_141",
        "BLACKWELL_96",
        "BLACKWELL_180",
    ]
    for name in names:
        assert GpuGroup[name].value == name
    assert GpuGroup.all() == [GpuGroup[n] for n in names]


def test_gpu_types_have_marketing_names_under_both_spellings() -> None:
    assert GpuType.NVIDIA_GEFORCE_RTX_4090.value == "NVIDIA GeForce RTX 4090"
    assert GpuType.NVIDIA_H100_80GB_HBM3.value == "NVIDIA H100 80GB HBM3"
    assert GpuType.NVIDIA_A100_SXM4_80GB.value == "NVIDIA A100-SXM4-80GB"
    assert GpuType.NVIDIA_A100_80GB_PCIe.value == "NVIDIA A100 80GB PCIe"
    assert GpuType.H200 is GpuType.NVIDIA_H200
    assert GpuType.GEFORCE_RTX_4090 is GpuType.NVIDIA_GEFORCE_RTX_4090
    assert GpuType.is_gpu_type("NVIDIA L4") and not GpuType.is_gpu_type("NVIDIA L5")
    for name in [
        "NVIDIA_GEFORCE_RTX_5090",
        "NVIDIA_RTX_6000_ADA_GENERATION",
        "NVIDIA_RTX_A4000",
        "NVIDIA_RTX_A4500",
        "NVIDIA_RTX_A5000",
        "NVIDIA_RTX_A6000",
        "NVIDIA_L4",
        "NVIDIA_GEFORCE_RTX_3090",
        "NVIDIA_A40",
        "NVIDIA_B200",
    ]:
        assert GpuType[name].value.startswith("NVIDIA ")


def test_cpu_instance_types() -> None:
    assert CpuInstanceType.CPU3G_1_4.value == "cpu3g-1-4"
    assert CpuInstanceType("cpu3c-8-16") is CpuInstanceType.CPU3C_8_16
    assert len(CpuInstanceType) == 12
    for member in CpuInstanceType:
        family, vcpus, gib = member.value.split("-")
        assert member.name == f"{family.upper()}_{vcpus}_{gib}"
        assert (member.vcpus, member.memory_gib) == (int(vcpus), int(gib))
