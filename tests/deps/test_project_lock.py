"""Per-function environments cut from the project's own lock: a project with a pyproject.toml and
a uv.lock (written by real `uv lock`), two endpoints taking subsets of it, and one asking for a
version the lock cannot give. Real uv, real workers; the packages come from a loopback index
(tests/index_server.py) where a newer release appears after the project was locked.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from uv import find_uv_bin

from index_server import serve_index
from openflash.deps.project_lock import lock_conflicts, project_lock
from openflash.prepare import Preparer

from helpers import make_wheel, run_flash, run_python, write

APP = """
import asyncio
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="first"), dependencies=["acme-a"])
def first() -> str:
    import acme_a
    return acme_a.V

@remote(CpuLiveServerless(name="second"), dependencies=["acme-a", "acme-c"])
def second() -> str:
    import acme_a, acme_c
    return acme_a.V + " " + acme_c.V

@remote(CpuLiveServerless(name="newer"), dependencies=["acme-a>=2"])
def newer() -> str:
    return "unreachable"

if __name__ == "__main__":
    print("first", asyncio.run(first()))
    print("second", asyncio.run(second()))
    try:
        asyncio.run(newer())
    except Exception as e:
        print("newer", type(e).__name__, e)
"""

PYPROJECT = """
[project]
name = "shop"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["acme-a"]
"""


def _wheel(index: Path, name: str, version: str) -> None:
    make_wheel(index, name, version, {f"{name}.py": f"V = {version!r}\n"})


def test_endpoints_resolve_to_the_project_locks_versions_and_check_names_what_it_cannot_give(
    tmp_path: Path, fresh_home: Path, uv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, project = tmp_path / "index", tmp_path / "shop"
    _wheel(index, "acme_a", "1.0")
    _wheel(index, "acme_c", "1.0")
    write(project / "pyproject.toml", PYPROJECT)
    write(project / "app.py", APP)
    with serve_index(index) as (url, _):
        argv = [find_uv_bin(), "lock", "--default-index", url, "--cache-dir", str(uv_cache)]
        subprocess.run(argv, cwd=project, check=True, capture_output=True, timeout=120)
        assert 'name = "acme-a"\nversion = "1.0"' in (project / "uv.lock").read_text()
        _wheel(index, "acme_a", "2.0")  # released after the project was locked
        monkeypatch.setenv("UV_INDEX_URL", url)
        # Without the project's lock, the newest release.
        assert Preparer().resolve(("acme-a",)).text == "acme-a==2.0\n"
        done = run_python(project / "app.py")
        check = run_flash("check", str(project), "--json", cwd=project)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[:2] == ["first 1.0", "second 1.0 1.0"]
    locked = project / "uv.lock"
    assert lines[2].startswith("newer DependencyConflictError")
    assert "these dependencies disagree with the project's lock" in lines[2]
    assert lines[3] == f"'acme-a>=2' cannot be met: {locked} locks acme-a 1.0"
    assert check.returncode == 1, check.stderr[-3000:]
    issues = json.loads(check.stdout)["issues"]
    # The lock pins what it holds: only acme-c, which it does not hold, is "not pinned".
    unpinned = [(i["endpoints"], i["message"][:9]) for i in issues if i["kind"] == "unpinned"]
    assert unpinned == [(["second"], "'acme-c' ")]
    errors = [i for i in issues if i["level"] == "error"]
    assert [(e["endpoints"], e["kind"]) for e in errors] == [(["newer"], "DependencyConflictError")]
    assert f"'acme-a>=2' cannot be met: {locked} locks acme-a 1.0" in errors[0]["message"]


def test_only_index_packages_locked_at_one_version_become_constraints(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", PYPROJECT)
    write(
        tmp_path / "uv.lock",
        """
        version = 1
        requires-python = ">=3.11"

        [[package]]
        name = "Acme_A"
        version = "1.0"
        source = { registry = "https://pypi.org/simple" }

        [[package]]
        name = "forked"
        version = "1.0"
        source = { registry = "https://pypi.org/simple" }

        [[package]]
        name = "forked"
        version = "2.0"
        source = { registry = "https://pypi.org/simple" }

        [[package]]
        name = "shop"
        version = "0.1.0"
        source = { virtual = "." }

        [[package]]
        name = "from-git"
        version = "0.3"
        source = { git = "https://example.com/from-git?rev=abc#abc" }
        """,
    )
    (tmp_path / "src").mkdir()
    lock = project_lock(tmp_path / "src")
    assert lock is not None and lock.constraints == ("acme-a==1.0",)
    assert lock_conflicts(("acme-a>=1", "forked>=3", "other<1"), lock) == []
    assert lock_conflicts(("Acme.A<1",), lock) == [
        f"'Acme.A<1' cannot be met: {tmp_path / 'uv.lock'} locks acme-a 1.0"
    ]
    (tmp_path / "pyproject.toml").unlink()  # a uv.lock counts beside a pyproject.toml only
    assert project_lock(tmp_path / "src") is None
