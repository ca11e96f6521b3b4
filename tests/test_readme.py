"""README's set-up: exactly two commands (the main job, the tests), each making and activating
a virtual environment, so that they work where the system Python refuses `pip install` outside
one (PEP 668: Debian, Ubuntu); .ci/run runs the second one verbatim. The first is run here, from
a copy of the checkout, with Debian's own Python where this machine has it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Set up") : readme.index("\n## ", readme.index("## Set up"))]
    return [m.group(1).strip() for m in re.finditer(r"```bash[^\n]*\n(.*?)```", section, re.S)]


def test_two_set_up_commands_each_in_a_virtual_environment() -> None:
    main, tests = _setup_commands()  # exactly two
    for command in (main, tests):
        assert "\n" not in command
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")
    assert main.endswith("python examples/dependencies/cpu_worker.py")
    assert tests.endswith("&& pytest") and "'.[test]'" in tests


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    extraction = next(line for line in script.splitlines() if line.startswith("command=$("))
    done = subprocess.run(
        ["bash", "-c", f'{extraction}\nprintf %s "$command"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == _setup_commands()[1]
    assert 'bash -c "$command"' in script


def _debians_python() -> str:
    """Debian's own python3 (externally managed) where there is one, else this one's."""
    system = Path("/usr/bin/python3")
    marker = list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED"))
    return str(system) if system.exists() and marker else sys.executable


@pytest.mark.slow
def test_the_main_command_runs_from_a_fresh_checkout(
    tmp_path: Path, uv_cache: Path, apt_dir: Path
) -> None:
    checkout = tmp_path / "openflash"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    python = _debians_python()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(python)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        FLASH_HOME=str(tmp_path / "flash-home"),
        FLASH_UV_CACHE_DIR=str(uv_cache),
        FLASH_APT_DIR=str(apt_dir),
    )
    if python == "/usr/bin/python3":  # the machine's Python refuses a plain `pip install`
        refused = subprocess.run(
            [python, "-m", "pip", "install", "--dry-run", "six"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert refused.returncode != 0
        assert "externally-managed-environment" in refused.stdout + refused.stderr
    main = _setup_commands()[0]
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", main],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "data science:" in done.stdout and "no dependencies:" in done.stdout
    assert (checkout / ".venv" / "bin" / "flash").exists()
