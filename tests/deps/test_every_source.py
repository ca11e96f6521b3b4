"""Every PEP 508 source: git (a repository made here, over git+file), local project folders,
sdists and wheels, keyed by their contents. Real uv, real git, real workers, a real `flash run`."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from openflash._settings import Settings
from openflash.deps.specs import normalize_dependencies
from openflash.errors import DependencyError
from openflash.prepare import Preparer

from helpers import FlashServer, make_wheel, run_python, write

PYPROJECT = """
[project]
name = "demo"
version = "0.1"
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
"""


def project(folder: Path, value: str) -> Path:
    write(folder / "pyproject.toml", PYPROJECT)
    write(folder / "src" / "demo" / "__init__.py", f"VALUE = {value!r}\n")
    return folder


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
    }
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_vcs_urls_are_accepted_and_other_schemes_are_refused_with_what_to_write(
    tmp_path: Path,
) -> None:
    for url in (
        "git+https://github.com/psf/requests@v2.31.0",
        "git+ssh://git@github.com/psf/requests.git",
        f"git+file://{tmp_path}/repo@main",
    ):
        assert normalize_dependencies([f"requests @ {url}"]) == (f"requests @ {url}",)
    with pytest.raises(DependencyError, match=r"'svn\+https'.*git\+https://") as info:
        normalize_dependencies(["demo @ svn+https://example.com/demo"])
    assert "demo @ git+https://github.com/owner/demo@v1.0" in info.value.hint


def test_local_folders_and_sdists_become_file_urls_relative_to_the_function_file(
    tmp_path: Path,
) -> None:
    folder = project(tmp_path / "proj", "one")
    sdist = tmp_path / "dist" / "demo-0.1.tar.gz"
    sdist.parent.mkdir()
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(folder, arcname="demo-0.1")
    assert normalize_dependencies(["demo @ ./proj"], base_dir=tmp_path) == (
        f"demo @ {folder.as_uri()}",
    )
    assert normalize_dependencies([f"demo @ {folder.as_uri()}"]) == (f"demo @ {folder.as_uri()}",)
    assert normalize_dependencies(["demo @ dist/demo-0.1.tar.gz"], base_dir=tmp_path) == (
        f"demo @ {sdist.as_uri()}",
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DependencyError, match="is not a Python project") as info:
        normalize_dependencies(["demo @ ./empty"], base_dir=tmp_path)
    assert "pyproject.toml" in info.value.hint


def test_a_git_source_resolves_with_its_commit_pinned_and_a_new_commit_moves_it(
    tmp_path: Path, fresh_home: Path
) -> None:
    repo = project(tmp_path / "repo", "one")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    first = git(repo, "rev-parse", "HEAD")
    specs = normalize_dependencies([f"demo @ git+file://{repo}"])
    preparer = Preparer(Settings.from_env())
    lock = preparer.resolve(specs)
    assert lock.text == f"demo @ git+file://{repo}@{first}\n"

    write(repo / "src" / "demo" / "__init__.py", "VALUE = 'two'\n")
    git(repo, "commit", "-qam", "two")
    second = git(repo, "rev-parse", "HEAD")
    fresh = Preparer(dataclasses.replace(Settings.from_env(), resolve_ttl=0))
    assert fresh.resolve(specs).text == f"demo @ git+file://{repo}@{second}\n"
    pinned = normalize_dependencies([f"demo @ git+file://{repo}@{first}"])
    assert fresh.resolve(pinned).text == f"demo @ git+file://{repo}@{first}\n"


SCRIPT = """
import asyncio, sys
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="local-src"), dependencies=[sys.argv[1]])
def value() -> str:
    import demo
    return demo.VALUE

print("value:", asyncio.run(value()))
input()  # the test edits the local source here
print("value:", asyncio.run(value()))
"""


@pytest.mark.parametrize("kind", ["folder", "wheel"])
def test_an_edited_project_or_a_rebuilt_wheel_is_a_new_environment_at_the_next_call(
    tmp_path: Path, fresh_home: Path, kind: str
) -> None:
    script = write(tmp_path / "app.py", SCRIPT)
    if kind == "folder":
        folder = project(tmp_path / "proj", "one")
        spec = "demo @ ./proj"
    else:
        wheel = make_wheel(tmp_path / "wheels", "demo", "0.1", {"demo.py": "VALUE = 'one'\n"})
        spec = "wheels/demo-0.1-py3-none-any.whl"
    proc = subprocess.Popen(
        [sys.executable, str(script), spec],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline() == "value: one\n"
        if kind == "folder":
            write(folder / "src" / "demo" / "__init__.py", "VALUE = 'two'\n")
        else:  # the same file name, the same size, the same modification time
            stat = wheel.stat()
            make_wheel(tmp_path / "wheels", "demo", "0.1", {"demo.py": "VALUE = 'two'\n"})
            os.utime(wheel, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        out, err = proc.communicate("\n", timeout=600)
    finally:
        proc.kill()
    assert out == "value: two\n", err


FLASH_APP = """
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="wheel-app"), dependencies=["wheels/demo-0.1-py3-none-any.whl"])
async def value(x: int = 0) -> dict:
    import demo
    return {"value": demo.VALUE}
"""


def test_a_rebuilt_wheel_under_flash_run_is_served_with_and_without_a_reload(
    tmp_path: Path, fresh_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    folder = tmp_path / "app"
    write(folder / "main.py", FLASH_APP)
    make_wheel(folder / "wheels", "demo", "0.1", {"demo.py": "VALUE = 'one'\n"})
    env = {"FLASH_HOME": str(fresh_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    env["FLASH_APT_DIR"] = str(apt_dir)

    def call(server: FlashServer) -> object:
        r = httpx.post(f"{server.url}/main/runsync", json={"input": {}}, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()["output"]["value"]

    with FlashServer(folder, env=env) as server:
        assert call(server) == "one"
        make_wheel(folder / "wheels", "demo", "0.1", {"demo.py": "VALUE = 'two'\n"})
        assert call(server) == "two"  # no reload: the next call sees the new wheel
        make_wheel(folder / "wheels", "demo", "0.1", {"demo.py": "VALUE = 'three'\n"})
        write(folder / "main.py", FLASH_APP + "\n# edited\n")  # a reload
        deadline = time.monotonic() + 60
        while "changed: main.py" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "changed: main.py" in server.output()
        assert call(server) == "three"


def test_a_bare_wheel_path_is_relative_to_the_script_not_the_cwd(
    tmp_path: Path, fresh_home: Path
) -> None:
    """A bare wheel path next to the script, as users write it, runs (relative to the file)."""
    make_wheel(tmp_path / "wheels", "demo", "0.1", {"demo.py": "VALUE = 'one'\n"})
    script = write(tmp_path / "bare.py", SCRIPT.replace("input()", "pass"))
    done = run_python(script, "wheels/demo-0.1-py3-none-any.whl", cwd=Path("/"))
    assert done.stdout == "value: one\nvalue: one\n", done.stderr
