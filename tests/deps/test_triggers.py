"""The generic triggers run for a layer: real apt, a package shipping GSettings schemas (which
GSettings refuses until ``glib-compile-schemas`` ran), in both layer modes; the host untouched."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from openflash.deps.apt import Apt
from openflash.deps.namespace_mode import layer_mode, run_in_layer
from openflash.deps.system import build_layer, resolve_system
from openflash.envs.store import Store
from openflash.errors import SystemDependencyError

PACKAGE = "gnome-settings-daemon-common"  # schemas only; the host has gsettings, not these
SCHEMA = ["org.gnome.settings-daemon.plugins.power", "sleep-inactive-ac-type"]
HOST_SCHEMAS = Path("/usr/share/glib-2.0/schemas")


@pytest.fixture
def apt(apt_dir: Path) -> Apt:
    return Apt(apt_dir, Path("/var/lib/dpkg/status"), index_ttl=86400)


def _host_schemas() -> str:
    return hashlib.sha256((HOST_SCHEMAS / "gschemas.compiled").read_bytes()).hexdigest()


def _gsettings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gsettings", "get", *SCHEMA], capture_output=True, text=True, env=env, check=False
    )


@pytest.fixture
def host_without_the_schema() -> None:
    if not (HOST_SCHEMAS / "gschemas.compiled").is_file():
        pytest.skip("the host has no glib schemas (libglib2.0-bin is not installed)")
    done = _gsettings({**os.environ, "GSETTINGS_BACKEND": "memory"})
    assert done.returncode != 0 and "No such schema" in done.stderr, done


@pytest.mark.skipif(not layer_mode().namespaces, reason="this kernel refuses namespaces")
def test_schemas_are_compiled_for_the_layer_at_its_real_paths(
    tmp_path: Path, apt: Apt, host_without_the_schema: None
) -> None:
    before = _host_schemas()
    store = Store(tmp_path / "home")
    lock = resolve_system((PACKAGE,), store=store, apt=apt, ttl=60)
    layer = build_layer(store, lock, apt, real_paths=True)
    assert layer.path is not None
    env = {"GSETTINGS_BACKEND": "memory"}
    done = run_in_layer(
        layer.path, ["gsettings", "get", *SCHEMA], timeout=60, error=SystemDependencyError, env=env
    )
    assert done.stdout.strip() == "'suspend'"
    # the host's schemas are still there (compiled together), and the host's file unchanged
    host_schema = run_in_layer(
        layer.path,
        ["gsettings", "get", "org.gnome.desktop.interface", "font-name"],
        timeout=60,
        error=SystemDependencyError,
        env=env,
    )
    assert host_schema.stdout.strip().startswith("'")
    assert _host_schemas() == before


def test_schemas_are_compiled_for_the_relocated_layer(
    tmp_path: Path, apt: Apt, host_without_the_schema: None
) -> None:
    store = Store(tmp_path / "home")
    lock = resolve_system((PACKAGE,), store=store, apt=apt, ttl=60)
    layer = build_layer(store, lock, apt, real_paths=False)
    assert layer.path is not None
    data_dirs = [*layer.paths["XDG_DATA_DIRS"], "/usr/local/share", "/usr/share"]
    env = {**os.environ, "GSETTINGS_BACKEND": "memory", "XDG_DATA_DIRS": ":".join(data_dirs)}
    done = _gsettings(env)
    assert done.stdout.strip() == "'suspend'", done.stderr
