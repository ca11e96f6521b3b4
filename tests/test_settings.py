from pathlib import Path

import pytest

from openflash._settings import Settings
from openflash.errors import ConfigError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.home.name == "openflash"
    assert s.uv_cache_dir == s.home / "uv-cache"
    assert s.resolve_ttl == 86400
    assert s.require_gpu is False


def test_values(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "FLASH_HOME": str(tmp_path),
            "FLASH_RESOLVE_TTL": "60",
            "FLASH_REQUIRE_GPU": "yes",
            "FLASH_UV_CACHE_DIR": str(tmp_path / "c"),
        }
    )
    assert (s.home, s.uv_cache_dir, s.resolve_ttl, s.require_gpu) == (
        tmp_path,
        tmp_path / "c",
        60,
        True,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLASH_RESOLVE_TTL", "soon"),
        ("FLASH_RESOLVE_TTL", "-1"),
        ("FLASH_REQUIRE_GPU", "maybe"),
        ("FLASH_WORKER_MAX_RSS", "lots"),
        ("FLASH_WORKER_MAX_RSS", "-5M"),
        ("FLASH_WORKER_MAX_RSS", "5X"),
        ("FLASH_NAMESPACES", "sometimes"),
        ("FLASH_TEMPLATE_IDLE_TIMEOUT", "forever"),
        ("FLASH_BYTECODE", "later"),
        ("FLASH_CANCEL_GRACE_S", "abc"),
        ("FLASH_SHARED_MEMORY_MIN", "lots"),
        ("FLASH_BUILD_LOCK_TIMEOUT", "-3"),
        ("FLASH_NON_DUMPABLE", "yes"),
    ],
)
def test_bad_values_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}={value!r}"):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", None),
        ("0", None),
        ("1048576", 1 << 20),
        ("512M", 512 << 20),
        ("512m", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", 3 << 29),
        ("64 KB", 64 << 10),
    ],
)
def test_worker_memory_cap_sizes(text: str, size: int | None) -> None:
    assert Settings.from_env({"FLASH_WORKER_MAX_RSS": text}).worker_max_rss == size


@pytest.mark.parametrize(("text", "on"), [("", True), ("auto", True), ("1", True), ("off", False)])
def test_namespaces_setting(text: str, on: bool) -> None:
    assert Settings.from_env({"FLASH_NAMESPACES": text}).namespaces is on


@pytest.mark.parametrize(
    ("text", "mode"), [("", "server"), ("server", "server"), ("ALL", "all"), (" off ", "off")]
)
def test_non_dumpable_setting(text: str, mode: str) -> None:
    assert Settings.from_env({"FLASH_NON_DUMPABLE": text}).non_dumpable == mode


def test_template_idle_timeout_and_bytecode_settings() -> None:
    defaults = Settings.from_env({})
    assert defaults.template_idle_timeout == 600 and defaults.bytecode_later is True
    given = Settings.from_env({"FLASH_TEMPLATE_IDLE_TIMEOUT": "30", "FLASH_BYTECODE": "eager"})
    assert given.template_idle_timeout == 30 and given.bytecode_later is False
    assert Settings.from_env({"FLASH_BYTECODE": "Background"}).bytecode_later is True
