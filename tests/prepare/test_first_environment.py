"""The first environment on a machine (an empty store): the worker runtime is built while the
environment resolves and installs, not after it, on the way to the first result (issue 25,
item 5); both are published whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from openflash.envs.store import READY_MARKER
from openflash.prepare import DependencyKey, Preparer

from helpers import make_wheel

#: Enough modules that building the environment (hashing and compiling each) takes a while.
MODULES = 600
SOURCE = "VALUE = {i}\n" + "".join(f"def f{j}(x):\n    return x + {j}\n\n" for j in range(20))


def test_the_worker_runtime_is_built_while_the_first_environment_builds(
    fresh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"manymods/__init__.py": ""}
    files.update({f"manymods/m{i:04d}.py": SOURCE.format(i=i) for i in range(MODULES)})
    wheel = make_wheel(tmp_path / "wheels", "manymods", "1.0", files)
    # Every .py compiled before the environment is published: its build outlasts the runtime's.
    monkeypatch.setenv("FLASH_BYTECODE", "eager")
    assert not (fresh_home / "runtime").exists(), "the store is empty"
    preparer = Preparer()
    try:
        prepared = preparer.build(DependencyKey((f"manymods @ {wheel.as_uri()}",), ()))
    finally:
        preparer.release()
    assert prepared.environment is not None and prepared.runtime_path is not None
    runtime_ready = prepared.runtime_path / READY_MARKER
    environment_ready = prepared.environment.path / READY_MARKER
    # The order the store saw: the runtime published before the environment (before this, it was
    # built after the environment was published, on the way to the first result).
    assert runtime_ready.stat().st_mtime_ns < environment_ready.stat().st_mtime_ns
    assert (prepared.runtime_path / "openflash" / "workers" / "child.py").is_file()
    site = next((prepared.environment.path / "lib").glob("python*/site-packages"))
    assert len(list((site / "manymods").glob("*.py"))) == MODULES + 1
