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

from openflash.backends.targets import LocalTarget
from openflash.envs.bundle import worker_runtime
from openflash.envs.environment import build_environment
from openflash.envs.store import Store
from openflash.runtime import process
from openflash.workers.port import WorkerSpec

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


@pytest.fixture(scope="session")
def apt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """apt's private index and .deb cache, shared by the run (like the uv cache)."""
    return tmp_path_factory.mktemp("apt")


@pytest.fixture(scope="session", autouse=True)
def host_packages_unchanged() -> Iterator[None]:
    """Nothing the suite does installs or removes a package on this machine."""
    status = Path("/var/lib/dpkg/status")
    before = status.read_bytes() if status.exists() else b""
    yield
    after = status.read_bytes() if status.exists() else b""
    assert after == before, "the host's dpkg status changed during the test run"


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path, uv_cache: Path, apt: Path) -> None:
    process.shutdown()
    monkeypatch.setenv("FLASH_HOME", str(home))
    monkeypatch.setenv("FLASH_UV_CACHE_DIR", str(uv_cache))
    monkeypatch.setenv("FLASH_APT_DIR", str(apt))
    for name in (
        "FLASH_REQUIRE_GPU",
        "FLASH_RESOLVE_TTL",
        "FLASH_SYSTEM_DEPS",
        "FLASH_SYSTEM_BASE",
        "FLASH_RETRY_BUILDS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def flash_home(
    monkeypatch: pytest.MonkeyPatch, session_home: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[Path]:
    """The session store, with a fresh runtime (no pools) for this test."""
    _use_home(monkeypatch, session_home, uv_cache, apt_dir)
    yield session_home
    process.shutdown()


@pytest.fixture
def fresh_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, uv_cache: Path, apt_dir: Path
) -> Iterator[Path]:
    """An empty store of this test's own (apt's index and .debs still shared), fresh runtime."""
    home = tmp_path / "flash-home"
    _use_home(monkeypatch, home, uv_cache, apt_dir)
    yield home
    process.shutdown()


@pytest.fixture(scope="session")
def bare_spec(session_home: Path, uv_cache: Path) -> WorkerSpec:
    """How to start a worker in an environment with no packages (for pool and backend tests)."""
    store = Store(session_home)
    env = build_environment(store, "", uv_cache=uv_cache)
    target = LocalTarget(env.python, worker_runtime(store))
    return WorkerSpec(endpoint="bare", target=target, cwd=Path.cwd())
