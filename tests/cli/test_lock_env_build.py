"""`flash lock`, `flash env` and `flash build` through the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openflash.cli.build import check_dockerfile
from openflash.deps.lockfile import LockFile

from helpers import make_wheel, run_flash, run_python, write


@pytest.fixture
def env(fresh_home: Path, uv_cache: Path, apt_dir: Path) -> dict[str, str]:
    return {
        "FLASH_HOME": str(fresh_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }


APP = """
    import asyncio
    from runpod_flash import CpuLiveServerless, remote

    @remote(CpuLiveServerless(name="demo"), dependencies=["openflash-demo-pkg"])
    def version() -> str:
        import openflash_demo_pkg
        return openflash_demo_pkg.VERSION

    if __name__ == "__main__":
        print(asyncio.run(version()))
"""


def demo_wheel(index: Path, version: str) -> None:
    make_wheel(
        index,
        "openflash_demo_pkg",
        version,
        {"openflash_demo_pkg/__init__.py": f"VERSION = {version!r}\n"},
    )


def test_a_run_uses_the_locked_version_when_a_newer_one_matches(
    tmp_path: Path, env: dict[str, str]
) -> None:
    index = tmp_path / "index"
    demo_wheel(index, "1.0")
    env = {**env, "UV_FIND_LINKS": str(index)}  # a local index beside PyPI
    project = tmp_path / "project"
    write(project / "app.py", APP)
    locked = run_flash("lock", cwd=project, env=env)
    assert locked.returncode == 0, locked.stderr
    lockfile = LockFile.read(project / "flash.lock")
    [entry] = lockfile.entries
    assert entry.endpoints == ["demo"]
    [package] = entry.packages
    assert (package.name, package.version) == ("openflash-demo-pkg", "1.0")
    assert package.hashes and package.hashes[0].startswith("sha256:")

    demo_wheel(index, "2.0")  # a newer release that matches the floating spec
    shutil.rmtree(env["FLASH_HOME"], ignore_errors=True)  # no cached resolution either
    done = run_python(project / "app.py", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.0"

    # The control: without the lock the same run takes 2.0.
    (project / "flash.lock").rename(project / "flash.lock.off")
    shutil.rmtree(env["FLASH_HOME"], ignore_errors=True)
    assert run_python(project / "app.py", env=env).stdout.strip() == "2.0"
    (project / "flash.lock.off").rename(project / "flash.lock")

    # Upgrading moves the lock; a plain `flash lock` would have kept 1.0.
    assert run_flash("lock", cwd=project, env=env).returncode == 0
    assert LockFile.read(project / "flash.lock").entries[0].packages[0].version == "1.0"
    assert (
        run_flash("lock", "--upgrade", "openflash-demo-pkg", cwd=project, env=env).returncode == 0
    )
    assert LockFile.read(project / "flash.lock").entries[0].packages[0].version == "2.0"


def test_a_stale_lock_is_reported_by_check_and_run(tmp_path: Path, env: dict[str, str]) -> None:
    project = tmp_path / "project"
    write(
        project / "app.py",
        APP.replace('dependencies=["openflash-demo-pkg"]', 'dependencies=["six==1.16.0"]').replace(
            "import openflash_demo_pkg\n        return openflash_demo_pkg.VERSION",
            "import six\n        return six.__version__",
        ),
    )
    assert run_flash("lock", cwd=project, env=env).returncode == 0
    source = project / "app.py"
    source.write_text(source.read_text().replace("six==1.16.0", "six==1.17.0"))
    checked = run_flash("check", "--json", cwd=project, env=env)
    stale = [i for i in json.loads(checked.stdout)["issues"] if i["kind"] == "stale-lock"]
    assert stale and "flash.lock locks ['six==1.16.0']" in stale[0]["message"]
    ran = run_python(source, env=env)
    assert ran.stdout.strip() == "1.17.0"
    assert "endpoint 'demo' no longer matches" in ran.stderr and "flash lock" in ran.stderr


def sixes(project: Path) -> None:
    write(
        project / "app.py",
        """
        import asyncio, sys, time
        from runpod_flash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="old-six"), dependencies=["six==1.16.0"])
        def a(): return 1

        @remote(CpuLiveServerless(name="new-six"), dependencies=["six==1.17.0"])
        def b(): return 2

        if __name__ == "__main__":
            print(asyncio.run(b()), flush=True)
            time.sleep(float(sys.argv[1]))  # keeps its environment in use
    """,
    )


def test_env_ls_sizes_agree_with_du_and_prune_spares_busy(
    tmp_path: Path, env: dict[str, str]
) -> None:
    project = tmp_path / "project"
    sixes(project)
    built = run_flash("env", "build", cwd=project, env=env)
    assert built.returncode == 0, built.stderr
    listed = run_flash("env", "ls", "--json", cwd=project, env=env)
    rows = json.loads(listed.stdout)
    envs = {r["key"]: r for r in rows if r["kind"] == "environment"}
    assert len(envs) == 2
    root = Path(env["FLASH_HOME"]) / "envs"
    ordered = [r["key"] for r in rows if r["kind"] == "environment"]
    du = subprocess.run(
        ["du", "-sB1", *(str(root / k) for k in ordered)],
        capture_output=True,
        text=True,
        check=True,
    )
    du_sizes = {Path(line.split()[1]).name: int(line.split()[0]) for line in du.stdout.splitlines()}
    assert {k: envs[k]["bytes"] for k in ordered} == du_sizes
    assert all(r["endpoints"] for r in envs.values())

    holder = subprocess.Popen(
        [sys.executable, str(project / "app.py"), "60"],
        cwd=project,
        env={**__import__("os").environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "2"
        busy = [
            r
            for r in json.loads(run_flash("env", "ls", "--json", cwd=project, env=env).stdout)
            if r["busy"]
        ]
        assert len(busy) == 1 and busy[0]["endpoints"] == ["new-six"]
        before = json.loads(run_flash("env", "ls", "--json", cwd=project, env=env).stdout)
        dry = run_flash("env", "prune", "--max-size", "0", "--dry-run", cwd=project, env=env)
        assert dry.returncode == 0, dry.stderr
        assert "would remove environment" in dry.stderr
        assert "1 would be removed (nothing was)" in dry.stderr
        after = json.loads(run_flash("env", "ls", "--json", cwd=project, env=env).stdout)
        assert [r["key"] for r in after] == [r["key"] for r in before]
        table = run_flash("env", "ls", cwd=project, env=env)
        assert "environments and layers" in table.stderr and "apt's cache" in table.stderr
        pruned = run_flash("env", "prune", "--max-size", "0", cwd=project, env=env)
        assert "1 removed; the environments and layers now hold" in pruned.stderr
        assert pruned.returncode == 0, pruned.stderr
        left = json.loads(run_flash("env", "ls", "--json", cwd=project, env=env).stdout)
        assert [r["key"] for r in left] == [busy[0]["key"]]  # only the busy one stays
        bytecode = Path(env["FLASH_HOME"]) / "bytecode"
        assert all(p.stat().st_nlink > 1 for p in bytecode.rglob("*.pyc"))  # the kept env's
        assert list(bytecode.rglob("*.pyc"))
        refused = run_flash("env", "rm", busy[0]["key"][:8], cwd=project, env=env)
        assert refused.returncode == 1 and "in use" in refused.stderr
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.2)
    assert run_flash("env", "rm", busy[0]["key"][:8], cwd=project, env=env).returncode == 0
    assert json.loads(run_flash("env", "ls", "--json", cwd=project, env=env).stdout) == []
    assert not list(bytecode.rglob("*.pyc")), "bytecode nothing links to is removed with it"
    assert run_flash("env", "prune", "--older-than", "soon", cwd=project, env=env).returncode == 2


def test_build_writes_dockerfiles_that_match_the_locks(tmp_path: Path, env: dict[str, str]) -> None:
    project = tmp_path / "project"
    write(
        project / "app.py",
        """
        from runpod_flash import CpuLiveServerless, Endpoint, CpuInstanceType, remote

        @remote(CpuLiveServerless(name="plot"), dependencies=["six==1.17.0"],
                system_dependencies=["graphviz"])
        def render(): ...

        api = Endpoint(name="api", cpu=CpuInstanceType.CPU3C_1_2)

        @api.post("/hello")
        def hello(name: str) -> str:
            return name
    """,
    )
    assert run_flash("lock", cwd=project, env=env).returncode == 0
    done = run_flash("build", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    out = project / ".flash" / "build"
    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {e["name"]: e for e in manifest["endpoints"]}
    assert set(by_name) == {"plot", "api"}
    assert by_name["api"]["routes"] == ["POST /app/hello"]
    assert by_name["plot"]["resource"]["class"] == "CpuLiveServerless"
    lockfile = LockFile.read(project / "flash.lock")
    for name, item in by_name.items():
        text = (out / item["dockerfile"]).read_text()
        entry = next(e for e in lockfile.entries if name in e.endpoints)
        lock_text = (out / item["lock"]).read_text()
        assert lock_text == entry.lock_text()
        assert check_dockerfile(text, lock_text, entry) == []
        assert f"COPY locks/{name}.txt /build/requirements.txt" in text
        assert "uv pip sync" in text and text.splitlines()[2].startswith("FROM python:3.")
        apt_line = next((line for line in text.splitlines() if "apt-get install" in line), "")
        installed = {
            w.split("=")[0] for w in apt_line.split() if "=" in w and not w.startswith("-")
        }
        assert installed == {p.name for p in entry.system_packages}
    assert "graphviz" in {p.name for p in lockfile.entries[0].system_packages} | {
        p.name for e in lockfile.entries for p in e.system_packages
    }
    assert (out / "app" / "app.py").is_file() and (out / "openflash" / "pyproject.toml").is_file()
    assert (out / f"{project.name}.tar.gz").is_file()
    assert run_flash("build", "--check", cwd=project, env=env).returncode == 0
    offline = run_flash("build", "--wheelhouse", cwd=project, env=env)
    assert offline.returncode == 0, offline.stderr
    wheels = {w.name.split("-")[0].lower() for w in (out / "wheelhouse").glob("*.whl")}
    assert {"six", "uv", "fastapi", "hatchling"} <= wheels  # the locks, openflash's needs, uv
    text = (out / by_name["plot"]["dockerfile"]).read_text()
    assert "--offline --no-index --find-links /build/wheelhouse /build/requirements.txt" in text
    assert (out / "debs" / "plot").is_dir() and "COPY debs/plot /build/debs" in text
    assert run_flash("build", "--check", cwd=project, env=env).returncode == 0
    tampered = out / by_name["api"]["dockerfile"]
    tampered.write_text(tampered.read_text() + "RUN pip install requests\n")
    checked = run_flash("build", "--check", cwd=project, env=env)
    assert (
        checked.returncode == 1
        and "pip installs requests, which is not in the lock" in checked.stderr
    )


def test_build_an_image_with_a_container_engine(tmp_path: Path, env: dict[str, str]) -> None:
    engines = [e for e in (shutil.which("docker"), shutil.which("podman")) if e]
    engine = next(
        (e for e in engines if subprocess.run([e, "info"], capture_output=True).returncode == 0),
        None,
    )
    if engine is None:
        pytest.skip("no container engine runs on this machine (docker/podman info fails)")
    base = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim-bookworm"  # as written
    if subprocess.run([engine, "pull", base], capture_output=True).returncode != 0:
        pytest.skip(f"{base} cannot be pulled here (no image registry is reachable)")
    project = tmp_path / "project"
    write(
        project / "app.py",
        """
        from runpod_flash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="img"), dependencies=["six==1.17.0"])
        def f(): ...
    """,
    )
    assert run_flash("build", cwd=project, env=env).returncode == 0
    out = project / ".flash" / "build"
    done = subprocess.run(
        [
            engine,
            "build",
            "-f",
            str(out / "dockerfiles" / "img"),
            "-t",
            "openflash-test-img",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
