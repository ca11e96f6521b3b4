"""The tree is the architecture: DESIGN.md's layers, small modules, and types that check.

- The layers contract lives in pyproject.toml (``[tool.importlinter]``) and is checked here with
  import-linter, on the real import graph (function-level imports included).
- Modules stay small (DESIGN.md: about 400 lines at most); one past that is split by concept.
- mypy runs strictly over src/openflash (``[tool.mypy]``) with zero errors.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "openflash"
MODULE_LINES_MAX = 400


def test_imports_follow_the_layers() -> None:
    # In a process of its own: import-linter configures logging, which would silence the
    # "openflash" logger for the tests after this one.
    program = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout, done.stdout


def test_modules_stay_small() -> None:
    long = {
        str(path.relative_to(SOURCE)): n
        for path in SOURCE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MODULE_LINES_MAX
    }
    assert not long, f"split these by concept (at most {MODULE_LINES_MAX} lines): {long}"


def test_no_basename_names_two_modules() -> None:
    seen: dict[str, Path] = {}
    twice = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        if path.name in seen:
            twice.append((seen[path.name], path))
        seen[path.name] = path
    assert not twice, twice


@pytest.mark.timeout(600)
def test_mypy_is_clean() -> None:
    from mypy import api

    stdout, stderr, code = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert code == 0, stdout + stderr


def test_the_code_map_names_every_module() -> None:
    """docs/how-it-works.md's table lists each module in its package's row."""
    doc = (ROOT / "docs" / "how-it-works.md").read_text()
    table = doc[doc.index("| layer (top to bottom) | modules |") :]
    lines = [line for line in table.splitlines()[2:] if line.startswith("|")]
    rows = {line.split("|")[1].strip(" `/"): line for line in lines}
    missing = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE)
        if path.name.startswith("__") or len(relative.parts) != 2:
            continue
        package, name = relative.parts[0], path.stem
        if f"`{name}`" not in rows.get(package, ""):
            missing.append(str(relative))
    assert not missing, f"add these to docs/how-it-works.md's code map: {missing}"
