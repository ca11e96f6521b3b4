"""`flash init` and `flash check` through the command line, in temporary projects."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest

from openflash.deps.namespace_mode import layer_mode
from openflash.runtime.dumpable import PROTECTION

from helpers import FlashServer, run_flash, write


@pytest.fixture
def env(flash_home: Path, uv_cache: Path, apt_dir: Path) -> dict[str, str]:
    return {
        "FLASH_HOME": str(flash_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }


def test_init_then_check_passes(tmp_path: Path, env: dict[str, str]) -> None:
    done = run_flash("init", "demo", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    project = tmp_path / "demo"
    assert {p.name for p in project.iterdir()} == {
        "cpu_worker.py",
        "gpu_worker.py",
        "lb_worker.py",
        "pyproject.toml",
        "README.md",
        ".gitignore",
        ".env.example",
    }
    # Workers do not see .env (Runpod's do not either): the template says so and names env=.
    dotenv = (project / ".env.example").read_text()
    assert "Workers do not see these" in dotenv and "env=" in dotenv
    checked = run_flash("check", "--strict", cwd=project, env=env)
    assert checked.returncode == 0, checked.stderr
    with FlashServer(project, "--no-reload", env=env) as server:  # served at once
        r = httpx.post(
            f"{server.url}/cpu_worker/runsync", json={"input": {"text": "2026-11-24"}}, timeout=120
        )
        assert r.json()["output"]["weekday"] == "Tuesday"
        assert httpx.get(f"{server.url}/lb_worker/health-check", timeout=60).json() == {"ok": True}
        echoed = httpx.post(
            f"{server.url}/lb_worker/echo", json={"message": "hi", "times": 2}, timeout=60
        )
        assert echoed.json() == {"echo": "hi hi"}
        state = httpx.get(f"{server.url}/_flash/state", timeout=60).json()
        assert state["layer_mode"] == asdict(layer_mode())  # the dashboard shows it
    again = run_flash("init", "demo", cwd=tmp_path, env=env)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert run_flash("init", "demo", "--force", cwd=tmp_path, env=env).returncode == 0


def test_conflicts_exit_1_with_uvs_explanation(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path / "app.py",
        """
        from runpod_flash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="clash"), dependencies=["requests==2.32.3", "urllib3<1.21"])
        def f(): ...

        @remote(CpuLiveServerless(name="fine"), dependencies=["six==1.17.0"])
        def g(): ...
    """,
    )
    done = run_flash("check", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "error: clash:" in done.stderr
    assert "requests==2.32.3 depends on urllib3" in done.stderr
    assert "fine" not in done.stderr.split("error:")[1]


def test_unknown_apt_package_exits_1(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path / "app.py",
        """
        from runpod_flash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="apt"), system_dependencies=["openflash-no-such-deb"])
        def f(): ...
    """,
    )
    done = run_flash("check", "--json", cwd=tmp_path, env=env)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    [issue] = [i for i in report["issues"] if i["level"] == "error"]
    assert (
        issue["endpoints"] == ["apt"]
        and "'openflash-no-such-deb' is not known to apt" in issue["message"]
    )


def test_a_file_that_fails_to_import_fails_the_check(tmp_path: Path, env: dict[str, str]) -> None:
    """Its endpoints would be missing from `flash run`: `flash check` fails (exit 1), naming
    the file, beside a good one that still resolves."""
    write(
        tmp_path / "good.py",
        """
        from runpod_flash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="good"))
        def f(): ...
    """,
    )
    write(tmp_path / "broken.py", "from runpod_flash import remote\n\ndef broken(:\n    pass\n")
    done = run_flash("check", "--json", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    [issue] = [i for i in report["issues"] if i["level"] == "error"]
    assert issue["kind"] == "import-failed" and issue["endpoints"] == ["broken.py"]
    plain = run_flash("check", cwd=tmp_path, env=env)
    assert plain.returncode == 1 and "all endpoints resolve" not in plain.stdout


def test_warnings_suggestions_and_strict(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path / "app.py",
        """
        from runpod_flash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="loose"), dependencies=["six", "idna==3.10"])
        def a(): ...

        @remote(CpuLiveServerless(name="close"), dependencies=["idna==3.10", "six==1.17.0"])
        def b(): ...

        @remote(CpuLiveServerless(name="sdist"), dependencies=["pyyaml==5.4.1"])
        def c(): ...
    """,
    )
    done = run_flash("check", "--json", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr  # warnings only
    issues = json.loads(done.stdout)["issues"]
    kinds = {(i["level"], i["kind"], tuple(i["endpoints"])) for i in issues}
    assert ("warning", "unpinned", ("loose",)) in kinds
    assert ("warning", "no-wheel", ("sdist",)) in kinds
    no_wheel = next(i for i in issues if i["kind"] == "no-wheel")
    assert "pyyaml has no wheel for this platform" in no_wheel["message"]
    near = [i for i in issues if i["kind"] == "near-duplicate"]
    assert near and "differ only in" in near[0]["message"]
    assert run_flash("check", "--strict", cwd=tmp_path, env=env).returncode == 1


def test_wrong_path_and_empty_project_say_so_in_one_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done = run_flash("check", str(tmp_path / "nope"), cwd=tmp_path, env=env)
    assert done.returncode == 2 and "is not a folder" in done.stderr
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / "plain.py", "x = 1\n")
    done = run_flash("check", "empty", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "no endpoints found" in done.stderr
    assert done.stderr.count("\n") <= 3


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["init"],
        ["check"],
        ["lock"],
        ["env", "ls"],
        ["env", "build"],
        ["env", "prune"],
        ["env", "rm"],
        ["build"],
    ],
)
def test_every_command_has_help_with_an_example(command: list[str], tmp_path: Path) -> None:
    done = run_flash(*command, "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "Example" in done.stdout or "example" in done.stdout.lower()


def test_check_says_which_layer_mode_is_in_use(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path / "app.py",
        """
        from runpod_flash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="plain"))
        def a(): ...
    """,
    )
    mode = layer_mode()
    done = run_flash("check", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert f"system layers: {mode.described}" in " ".join(done.stderr.split())
    assert f"caller's environment: {PROTECTION['server']}" in " ".join(done.stderr.split())
    forced = run_flash(
        "check",
        "--json",
        cwd=tmp_path,
        env={**env, "FLASH_NAMESPACES": "off", "FLASH_NON_DUMPABLE": "off"},
    )
    assert json.loads(forced.stdout)["caller_environ"] == PROTECTION["off"]
    assert json.loads(forced.stdout)["layer_mode"] == {
        "name": "relocated",
        "reason": "FLASH_NAMESPACES=off",
        "pid_isolation": False,
    }
    plain = run_flash("check", cwd=tmp_path, env={**env, "FLASH_NAMESPACES": "off"})
    assert (
        "relocated mode (FLASH_NAMESPACES=off); workers have no PID isolation: they can read "
        "their caller's /proc/<pid>/environ"
    ) in " ".join(plain.stderr.split())
