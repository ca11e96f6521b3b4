"""Shared fixtures: one uv cache for the whole run, a store per test or per session.

Every test uses real uv, real processes and a real store. The uv cache is shared across the run
(and, locally, across runs) so that packages are downloaded once; it lives on the same disk as the
temporary stores so that installs are hardlinks, as in production.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from openflash.api import runtime
from openflash.backends.base import WorkerSpec
from openflash.envs.build import build_environment
from openflash.envs.runtime import worker_runtime
from openflash.envs.store import Store

ROOT = Path(__file__).resolve().parent.parent
UV_CACHE = Path(
    os.environ.get("OPENFLASH_TEST_UV_CACHE")
    or Path(tempfile.gettempdir()) / "openflash-test-uv-cache"
)

sys.path.insert(0, str(Path(__file__).parent))  # so that tests can import helpers


@pytest.fixture(scope="session")
def uv_cache() -> Path:
    UV_CACHE.mkdir(parents=True, exist_ok=True)
    return UV_CACHE


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store shared by tests that only need environments to exist."""
    return tmp_path_factory.mktemp("flash-home")


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path, uv_cache: Path) -> None:
    runtime.shutdown()
    monkeypatch.setenv("FLASH_HOME", str(home))
    monkeypatch.setenv("FLASH_UV_CACHE_DIR", str(uv_cache))
    monkeypatch.delenv("FLASH_REQUIRE_GPU", raising=False)
    monkeypatch.delenv("FLASH_RESOLVE_TTL", raising=False)


@pytest.fixture
def flash_home(
    monkeypatch: pytest.MonkeyPatch, session_home: Path, uv_cache: Path
) -> Iterator[Path]:
    """The session store, with a fresh runtime (no pools) for this test."""
    _use_home(monkeypatch, session_home, uv_cache)
    yield session_home
    runtime.shutdown()


@pytest.fixture
def fresh_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, uv_cache: Path) -> Iterator[Path]:
    """An empty store of this test's own, with a fresh runtime."""
    home = tmp_path / "flash-home"
    _use_home(monkeypatch, home, uv_cache)
    yield home
    runtime.shutdown()


@pytest.fixture(scope="session")
def bare_spec(session_home: Path, uv_cache: Path) -> WorkerSpec:
    """How to start a worker in an environment with no packages (for pool and backend tests)."""
    store = Store(session_home)
    env = build_environment(store, "", uv_cache=uv_cache)
    return WorkerSpec(
        endpoint="bare", python=env.python, runtime_path=worker_runtime(store), cwd=Path.cwd()
    )
