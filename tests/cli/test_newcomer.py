"""A newcomer's first steps: `flash init` says what to run next and writes a project that
installs as written (into a fresh virtual environment, with uv) and runs; `flash run` prints a
call to paste, and the call it prints works."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from uv import find_uv_bin

from helpers import FlashServer, run_flash

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(flash_home: Path, uv_cache: Path, apt_dir: Path) -> dict[str, str]:
    return {
        "FLASH_HOME": str(flash_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }


def test_init_prints_the_next_commands(tmp_path: Path) -> None:
    done = run_flash("init", "demo", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    steps = lines[lines.index("next:") + 1 :]
    assert [s.split()[0:2] for s in steps] == [
        ["cd", "demo"],
        ["flash", "check"],
        ["python", "cpu_worker.py"],
        ["flash", "run"],
    ]
    assert (tmp_path / "demo" / "cpu_worker.py").exists()
    quiet = run_flash("init", "quiet", "-q", cwd=tmp_path, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


@pytest.mark.slow
def test_an_init_project_installs_into_a_fresh_venv_and_runs(
    tmp_path: Path, env: dict[str, str], uv_cache: Path
) -> None:
    assert run_flash("init", "demo", cwd=tmp_path, timeout=120).returncode == 0
    venv = tmp_path / "venv"
    uv = find_uv_bin()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    base_python = getattr(sys, "_base_executable", sys.executable)
    for argv in (
        [uv, "venv", "--quiet", "--python", base_python, str(venv)],
        # openflash is not on the index: it comes from this checkout, as the pyproject says.
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "./demo",
            str(ROOT),
        ],
    ):
        done = subprocess.run(
            [*argv, "--cache-dir", str(uv_cache)],
            cwd=tmp_path,
            env=clean,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
    # Installed, the project's modules import by name from anywhere, and its endpoint runs.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    program = (
        "import asyncio, cpu_worker\n"
        "assert 'site-packages' in cpu_worker.__file__, cpu_worker.__file__\n"
        "print(asyncio.run(cpu_worker.parse_date('24 November 2026 10:30')))\n"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", program],
        cwd=elsewhere,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "'iso': '2026-11-24T10:30:00'" in done.stdout and "Tuesday" in done.stdout


@pytest.mark.slow
def test_flash_run_prints_a_call_that_works(tmp_path: Path, env: dict[str, str]) -> None:
    assert run_flash("init", "demo", cwd=tmp_path, timeout=120).returncode == 0
    with FlashServer(tmp_path / "demo", "--no-reload", env=env) as server:
        lines = server.output().splitlines()
        steps = lines[lines.index("next:") + 1 :]
        assert steps[0].startswith("  curl -X POST ") and "/runsync" in steps[0]
        assert "Ctrl-C stops" in steps[1]
        argv = shlex.split(steps[0])
        done = subprocess.run(
            [*argv, "--silent", "--max-time", "300"], capture_output=True, text=True, timeout=320
        )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"]["iso"] == "2026-11-24T10:30:00"
