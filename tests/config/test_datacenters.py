"""Every data center name any Runpod Flash 1.x release had, ``from_string`` and ``CPU_DATACENTERS``."""

import pytest

import runpod_flash
from openflash import CPU_DATACENTERS, DataCenter, Endpoint

# Flash 1.0-1.9 and 1.17+ list the first eleven; 1.10-1.16 also had GA-2, MD-1, NC-1 and IS-1.
EVERY_RELEASE = {
    "US_CA_2": "US-CA-2",
    "US_IL_1": "US-IL-1",
    "US_KS_2": "US-KS-2",
    "US_MO_1": "US-MO-1",
    "US_MO_2": "US-MO-2",
    "US_NC_2": "US-NC-2",
    "US_NE_1": "US-NE-1",
    "US_WA_1": "US-WA-1",
    "EU_CZ_1": "EU-CZ-1",
    "EU_RO_1": "EU-RO-1",
    "EUR_NO_1": "EUR-NO-1",
}
SOME_RELEASES = {
    "US_GA_2": "US-GA-2",
    "US_MD_1": "US-MD-1",
    "US_NC_1": "US-NC-1",
    "EUR_IS_1": "EUR-IS-1",
}


def test_every_member_any_release_had() -> None:
    expected = EVERY_RELEASE | SOME_RELEASES
    assert {dc.name: dc.value for dc in DataCenter} == expected
    assert DataCenter.all() == list(DataCenter)
    assert DataCenter.US_GA_2 == "US-GA-2"  # a str enum, as in Flash


@pytest.mark.parametrize("text", ["EU-RO-1", "eu-ro-1", "EU_RO_1", "  eu_ro_1 "])
def test_from_string_accepts_the_spellings(text: str) -> None:
    assert DataCenter.from_string(text) is DataCenter.EU_RO_1


def test_from_string_names_the_bad_value_and_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown data center 'mars-1'.*US-CA-2.*EUR-NO-1"):
        DataCenter.from_string("mars-1")


def test_cpu_datacenters_and_the_compat_package() -> None:
    assert frozenset({DataCenter.EU_RO_1}) == CPU_DATACENTERS
    assert runpod_flash.CPU_DATACENTERS is CPU_DATACENTERS
    assert runpod_flash.DataCenter.from_string("us-md-1") is DataCenter.US_MD_1


def test_endpoints_accept_one_or_several_datacenters() -> None:
    one = Endpoint(name="dc-one", cpu="cpu3c-1-2", datacenter=DataCenter.US_GA_2)
    several = Endpoint(name="dc-many", datacenter=[DataCenter.US_NC_1, DataCenter.EUR_IS_1])
    assert one.name == "dc-one" and several.name == "dc-many"
