"""Hardware names, with Runpod Flash's member names and string values.

``GpuGroup`` and ``GpuType`` pick GPUs; ``CpuInstanceType`` picks a CPU size, whose digits are the
vCPUs and GiB of memory (``cpu3c-2-4``: 2 vCPUs, 4 GiB). The rest are cloud-only names that
programs written for Runpod Flash import; they are accepted here and have no local effect.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "CPU_DATACENTERS",
    "CpuInstanceType",
    "CudaVersion",
    "DataCenter",
    "GpuGroup",
    "GpuType",
    "ServerlessScalerType",
    "ServerlessType",
]


class GpuGroup(Enum):
    ANY = "any"
    ADA_24 = "ADA_24"
    ADA_32_PRO = "ADA_32_PRO"
    ADA_48_PRO = "ADA_48_PRO"
    ADA_80_PRO = "ADA_80_PRO"
    AMPERE_16 = "AMPERE_16"
    AMPERE_24 = "AMPERE_24"
    AMPERE_48 = "AMPERE_48"
    AMPERE_80 = "AMPERE_80"
    HOPPER_141 = "HOPPER_141"
    BLACKWELL_96 = "BLACKWELL_96"
    BLACKWELL_180 = "BLACKWELL_180"

    @classmethod
    def all(cls) -> list[GpuGroup]:
        return [g for g in cls if g is not cls.ANY]


class GpuType(Enum):
    ANY = "any"
    NVIDIA_GEFORCE_RTX_4090 = "NVIDIA GeForce RTX 4090"
    NVIDIA_GEFORCE_RTX_5090 = "NVIDIA GeForce RTX 5090"
    NVIDIA_RTX_6000_ADA_GENERATION = "NVIDIA RTX 6000 Ada Generation"
    NVIDIA_H100_80GB_HBM3 = "NVIDIA H100 80GB HBM3"
    NVIDIA_RTX_A4000 = "NVIDIA RTX A4000"
    NVIDIA_RTX_A4500 = "NVIDIA RTX A4500"
    NVIDIA_RTX_4000_ADA_GENERATION = "NVIDIA RTX 4000 Ada Generation"
    NVIDIA_RTX_2000_ADA_GENERATION = "NVIDIA RTX 2000 Ada Generation"
    NVIDIA_RTX_A5000 = "NVIDIA RTX A5000"
    NVIDIA_L4 = "NVIDIA L4"
    NVIDIA_GEFORCE_RTX_3090 = "NVIDIA GeForce RTX 3090"
    NVIDIA_A40 = "NVIDIA A40"
    NVIDIA_RTX_A6000 = "NVIDIA RTX A6000"
    NVIDIA_A100_80GB_PCIe = "NVIDIA A100 80GB PCIe"
    NVIDIA_A100_SXM4_80GB = "NVIDIA A100-SXM4-80GB"
    NVIDIA_H200 = "NVIDIA H200"
    NVIDIA_B200 = "NVIDIA B200"
    NVIDIA_RTX_PRO_6000_BLACKWELL_SERVER_EDITION = "NVIDIA RTX PRO 6000 Blackwell Server Edition"
    NVIDIA_RTX_PRO_6000_BLACKWELL_WORKSTATION_EDITION = (
        "NVIDIA RTX PRO 6000 Blackwell Workstation Edition"
    )
    NVIDIA_RTX_PRO_6000_BLACKWELL_MAX_Q_WORKSTATION_EDITION = (
        "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
    )
    # The names newer Runpod Flash releases use (aliases of the members above).
    GEFORCE_RTX_4090 = "NVIDIA GeForce RTX 4090"
    GEFORCE_RTX_5090 = "NVIDIA GeForce RTX 5090"
    RTX_6000_ADA_GENERATION = "NVIDIA RTX 6000 Ada Generation"
    H100_80GB_HBM3 = "NVIDIA H100 80GB HBM3"
    RTX_A4000 = "NVIDIA RTX A4000"
    RTX_A4500 = "NVIDIA RTX A4500"
    RTX_4000_ADA_GENERATION = "NVIDIA RTX 4000 Ada Generation"
    RTX_2000_ADA_GENERATION = "NVIDIA RTX 2000 Ada Generation"
    RTX_A5000 = "NVIDIA RTX A5000"
    L4 = "NVIDIA L4"
    GEFORCE_RTX_3090 = "NVIDIA GeForce RTX 3090"
    A40 = "NVIDIA A40"
    RTX_A6000 = "NVIDIA RTX A6000"
    A100_80GB_PCIe = "NVIDIA A100 80GB PCIe"
    A100_SXM4_80GB = "NVIDIA A100-SXM4-80GB"
    H200 = "NVIDIA H200"
    B200 = "NVIDIA B200"
    RTX_PRO_6000_BLACKWELL_SERVER_EDITION = "NVIDIA RTX PRO 6000 Blackwell Server Edition"
    RTX_PRO_6000_BLACKWELL_WORKSTATION_EDITION = "NVIDIA RTX PRO 6000 Blackwell Workstation Edition"
    RTX_PRO_6000_BLACKWELL_MAX_Q_WORKSTATION_EDITION = (
        "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
    )

    @classmethod
    def all(cls) -> list[GpuType]:
        return [g for g in cls if g is not cls.ANY]

    @classmethod
    def is_gpu_type(cls, value: str) -> bool:
        return any(g.value == value for g in cls)


class CpuInstanceType(str, Enum):
    CPU3G_1_4 = "cpu3g-1-4"
    CPU3G_2_8 = "cpu3g-2-8"
    CPU3G_4_16 = "cpu3g-4-16"
    CPU3G_8_32 = "cpu3g-8-32"
    CPU3C_1_2 = "cpu3c-1-2"
    CPU3C_2_4 = "cpu3c-2-4"
    CPU3C_4_8 = "cpu3c-4-8"
    CPU3C_8_16 = "cpu3c-8-16"
    CPU5C_1_2 = "cpu5c-1-2"
    CPU5C_2_4 = "cpu5c-2-4"
    CPU5C_4_8 = "cpu5c-4-8"
    CPU5C_8_16 = "cpu5c-8-16"

    @property
    def vcpus(self) -> int:
        return int(self.value.split("-")[1])

    @property
    def memory_gib(self) -> int:
        return int(self.value.split("-")[2])


class CudaVersion(Enum):
    V11_8 = "11.8"
    V12_0 = "12.0"
    V12_1 = "12.1"
    V12_2 = "12.2"
    V12_3 = "12.3"
    V12_4 = "12.4"
    V12_5 = "12.5"
    V12_6 = "12.6"
    V12_7 = "12.7"
    V12_8 = "12.8"
    V12_9 = "12.9"
    V13_0 = "13.0"


class DataCenter(str, Enum):
    """Every data center any Flash 1.x release named (1.10 to 1.16 had four more than 1.19)."""

    US_CA_2 = "US-CA-2"
    US_GA_2 = "US-GA-2"
    US_IL_1 = "US-IL-1"
    US_KS_2 = "US-KS-2"
    US_MD_1 = "US-MD-1"
    US_MO_1 = "US-MO-1"
    US_MO_2 = "US-MO-2"
    US_NC_1 = "US-NC-1"
    US_NC_2 = "US-NC-2"
    US_NE_1 = "US-NE-1"
    US_WA_1 = "US-WA-1"
    EU_CZ_1 = "EU-CZ-1"
    EU_RO_1 = "EU-RO-1"
    EUR_IS_1 = "EUR-IS-1"
    EUR_NO_1 = "EUR-NO-1"

    @classmethod
    def from_string(cls, value: str) -> DataCenter:
        """``"eu-ro-1"``, ``"EU_RO_1"`` and ``" EU-RO-1 "`` all name ``DataCenter.EU_RO_1``."""
        normalized = str(value).strip().upper().replace("_", "-")
        try:
            return cls(normalized)
        except ValueError:
            valid = ", ".join(dc.value for dc in cls)
            raise ValueError(f"unknown data center {value!r}; expected one of: {valid}") from None

    @classmethod
    def all(cls) -> list[DataCenter]:
        return list(cls)


# The data centers Runpod serves CPU endpoints from (the same set in every release that had it).
CPU_DATACENTERS: frozenset[DataCenter] = frozenset({DataCenter.EU_RO_1})


class ServerlessScalerType(Enum):
    QUEUE_DELAY = "QUEUE_DELAY"
    REQUEST_COUNT = "REQUEST_COUNT"


class ServerlessType(Enum):
    QB = "QB"
    LB = "LB"
