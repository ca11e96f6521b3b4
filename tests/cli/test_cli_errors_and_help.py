"""The command line's own manners: openflash's errors as one message and a hint (no traceback),
and `--help` showing flags as flags, without typer's type column (``<bool>``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import run_flash, write


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(
        tmp_path / "app.py",
        """
        from runpod_flash import CpuLiveServerless, remote


        @remote(CpuLiveServerless(name="hello"))
        def hello() -> str:
            return "hi"
        """,
    )
    return tmp_path


def test_flash_run_with_a_bad_setting_says_so_in_two_lines(project: Path) -> None:
    done = run_flash("run", ".", cwd=project, env={"FLASH_BACKEND": "nope"}, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: FLASH_BACKEND='nope' is not a backend",
        "hint: set FLASH_BACKEND to one of: local, ray",
    ]
    assert done.stdout == ""


def test_any_command_with_a_bad_setting_has_no_traceback(project: Path) -> None:
    done = run_flash("check", ".", cwd=project, env={"FLASH_RESOLVE_TTL": "abc"}, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0] == "error: FLASH_RESOLVE_TTL='abc' is not a number of seconds"
    assert lines[1].startswith("hint: set FLASH_RESOLVE_TTL to a non-negative number")
    assert "Traceback" not in done.stderr and len(lines) == 2
    # -v keeps the traceback, for a bug report.
    verbose = run_flash(
        "check", ".", "-v", cwd=project, env={"FLASH_RESOLVE_TTL": "abc"}, timeout=120
    )
    assert verbose.returncode != 0
    assert "Traceback" in verbose.stderr and "_settings.py" in verbose.stderr


@pytest.mark.parametrize(
    ("args", "env", "first_line"),
    [
        ([], {"FLASH_QUIET": "maybe"}, "error: FLASH_QUIET='maybe' is not a yes/no value"),
        ([], {"FLASH_LOG_FORMAT": "xml"}, "error: FLASH_LOG_FORMAT='xml' is not text or json"),
        (["--log-format", "xml"], {}, "error: --log-format 'xml' is not text or json"),
    ],
    ids=["quiet-word", "log-format-variable", "log-format-flag"],
)
def test_flash_run_names_where_a_bad_value_came_from(
    project: Path, args: list[str], env: dict[str, str], first_line: str
) -> None:
    """A bad FLASH_QUIET used to be taken as "not quiet"; a bad FLASH_LOG_FORMAT was blamed on
    a --log-format flag the user never passed."""
    done = run_flash("run", ".", *args, cwd=project, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == first_line
    assert lines[1].startswith("hint: ") and len(lines) == 2


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["check"],
        ["lock"],
        ["init"],
        ["build"],
        ["env"],
        ["env", "ls"],
        ["env", "prune"],
    ],
)
def test_help_shows_flags_as_flags(command: list[str], tmp_path: Path) -> None:
    done = run_flash(*command, "--help", cwd=tmp_path, env={"COLUMNS": "100"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--help" in done.stdout
    assert not re.search(r"<(bool|int|str|path|list\[str\])>", done.stdout), done.stdout
    help_row = next(line for line in done.stdout.splitlines() if "--help" in line)
    assert re.search(r"--help\s+Show this message and exit", help_row), help_row


def test_values_are_named_by_their_option(tmp_path: Path) -> None:
    done = run_flash("run", "--help", cwd=tmp_path, env={"COLUMNS": "120"}, timeout=120)
    assert re.search(r"--port\s+-p\s+PORT\s+Port to listen on", done.stdout), done.stdout
    assert re.search(r"--quiet\s+-q\s+Print only results", done.stdout), done.stdout
    assert re.search(r"--reload\s+--no-reload\s+Reload routes", done.stdout), done.stdout
