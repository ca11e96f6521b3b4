"""Environments built by the real uv: isolated, hardlinked, with bytecode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from openflash.envs.bundle import worker_runtime
from openflash.envs.environment import build_environment, environment_key
from openflash.envs.store import Store
from openflash.errors import EnvironmentBuildError


def test_key_depends_on_the_lock() -> None:
    assert environment_key("six==1.16.0\n") == environment_key("six==1.16.0\n")
    assert environment_key("six==1.16.0\n") != environment_key("six==1.17.0\n")


def test_environment_holds_exactly_the_lock(tmp_path: Path, uv_cache: Path) -> None:
    store = Store(tmp_path)
    env = build_environment(store, "six==1.16.0\n", uv_cache=uv_cache)
    assert env.path == tmp_path / "envs" / env.key
    out = subprocess.run(
        [str(env.python), "-c", "import six, sys; print(six.__version__); import pydantic"],
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "1.16.0"
    assert "No module named 'pydantic'" in out.stderr  # installed on the host, not here
    site = next((env.path / "lib").glob("python*/site-packages"))
    assert (site / "six.py").stat().st_nlink > 1, "installed by hardlink from uv's cache"
    assert list((site / "__pycache__").glob("six.*.pyc")), "bytecode compiled at build time"
    assert (env.path / "openflash-lock.txt").read_text() == "six==1.16.0\n"


def test_same_lock_same_environment(tmp_path: Path, uv_cache: Path) -> None:
    store = Store(tmp_path)
    a = build_environment(store, "six==1.16.0\n", uv_cache=uv_cache)
    b = build_environment(store, "six==1.16.0\n", uv_cache=uv_cache)
    assert a == b
    assert len(store.events()) == 1


def test_a_lock_uvs_cache_holds_installs_without_the_index(
    tmp_path: Path, uv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_environment(Store(tmp_path / "a"), "six==1.16.0\n", uv_cache=uv_cache)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):  # every request now fails
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    env = build_environment(Store(tmp_path / "b"), "six==1.16.0\n", uv_cache=uv_cache)
    assert list(next((env.path / "lib").glob("python*/site-packages")).glob("six.py"))
    # ... and a pin the cache lacks goes to the index (here: fails, saying why).
    with pytest.raises(EnvironmentBuildError, match="installing the environment's packages failed"):
        build_environment(Store(tmp_path / "c"), "six==1.10.0\n", uv_cache=uv_cache)
    assert not list((tmp_path / "c" / "envs").glob("*"))


def test_empty_lock_gives_a_bare_environment(tmp_path: Path, uv_cache: Path) -> None:
    env = build_environment(Store(tmp_path), "", uv_cache=uv_cache)
    out = subprocess.run(
        [str(env.python), "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(env.path)


def test_environment_is_relocatable_after_publish(tmp_path: Path, uv_cache: Path) -> None:
    # Built in tmp/, renamed into envs/: console scripts must still run.
    env = build_environment(Store(tmp_path), "pip==24.0\n", uv_cache=uv_cache)
    out = subprocess.run(
        [str(env.path / "bin" / "pip"), "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "pip 24.0" in out.stdout


def test_worker_runtime_is_importable_and_compiled(tmp_path: Path) -> None:
    path = worker_runtime(Store(tmp_path))
    assert (path / "openflash" / "workers" / "child.py").is_file()
    assert (path / "cloudpickle" / "__init__.py").is_file()
    assert list((path / "openflash" / "workers" / "__pycache__").glob("child.*.pyc"))
    assert worker_runtime(Store(tmp_path)) == path


def test_a_rebuilt_local_wheel_gets_a_new_key(tmp_path: Path) -> None:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"one")
    lock = f"demo @ {wheel.as_uri()}\n"
    first = environment_key(lock)
    assert environment_key(lock) == first
    wheel.write_bytes(b"two, longer")
    assert environment_key(lock) != first


def test_a_failed_build_leads_with_uvs_own_lines() -> None:
    from openflash.envs.environment import summarize_uv_failure

    text = (Path(__file__).parent / "data" / "uv-sync-build-failure.txt").read_text()
    summary = summarize_uv_failure(text)
    assert summary.splitlines()[0] == "error: Failed to build `pyyaml==5.4.1`"
    assert "AttributeError: 'build_ext' object has no attribute 'cython_sources'" in summary
    assert len(summary.splitlines()) < 25
