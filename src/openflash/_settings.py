"""Settings read from the environment, each with its default.

- FLASH_HOME: the store (environments, layers, locks, uv cache); default: the user cache dir.
- FLASH_UV_CACHE_DIR: uv's cache; default $FLASH_HOME/uv-cache. Keep it on FLASH_HOME's disk,
  so that installs are hardlinks.
- FLASH_RESOLVE_TTL: seconds a resolution is reused before uv is asked again; default 86400.
- FLASH_REQUIRE_GPU: 1 makes a GPU endpoint on a machine without GPUs an error; default 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from openflash.errors import ConfigError

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True)
class Settings:
    home: Path
    uv_cache_dir: Path
    resolve_ttl: float
    require_gpu: bool

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        home_text = env.get("FLASH_HOME") or platformdirs.user_cache_dir("openflash")
        home = Path(home_text).expanduser().absolute()
        cache_text = env.get("FLASH_UV_CACHE_DIR")
        uv_cache = Path(cache_text).expanduser().absolute() if cache_text else home / "uv-cache"
        return cls(
            home=home,
            uv_cache_dir=uv_cache,
            resolve_ttl=_seconds(env, "FLASH_RESOLVE_TTL", 86400.0),
            require_gpu=_flag(env, "FLASH_REQUIRE_GPU"),
        )


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigError(
            f"{name}={text!r} is not a number of seconds",
            hint=f"set {name} to a non-negative number, e.g. {name}={int(default)}",
        )
    return value


def _flag(env: dict[str, str], name: str) -> bool:
    text = env.get(name, "").strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={text!r} is not a yes/no value", hint=f"set {name}=1 or {name}=0")
