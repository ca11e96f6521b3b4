"""The examples run as documented: ``python examples/dependencies/FILE``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import run_python

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dependencies"


def _printed(stdout: str, label: str) -> dict:
    line = next(line for line in stdout.splitlines() if line.startswith(label))
    return ast.literal_eval(line[len(label) :].strip())


@pytest.mark.usefixtures("flash_home")
def test_cpu_worker_data_science_and_no_dependencies() -> None:
    done = run_python(EXAMPLES / "cpu_worker.py")
    assert done.returncode == 0, done.stderr
    data = _printed(done.stdout, "data science:")
    assert data["mean"] == {"a": 3.0, "b": 4.333333}
    assert data["total"] == 22.0
    assert data["t_test"]["p"] == pytest.approx(0.512225, abs=1e-6)
    versions = data["versions"]
    assert versions["pandas"] == "2.1.3" and versions["numpy"] == "1.26.2"
    assert tuple(int(x) for x in versions["scipy"].split(".")[:2]) >= (1, 11)
    plain = _printed(done.stdout, "no dependencies:")
    assert plain == {
        "words": 3,
        "characters": 15,
        "capitals": 2,
        "has_digits": True,
        "python": plain["python"],
    }


@pytest.mark.usefixtures("flash_home")
def test_versioned_worker_honours_every_constraint_form() -> None:
    done = run_python(EXAMPLES / "versioned_worker.py")
    assert done.returncode == 0, done.stderr
    found = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert found["python-dateutil"] == "2.9.0.post0"
    assert int(found["Pillow"].split(".")[0]) >= 10
    assert int(found["numpy"].split(".")[0]) < 2
    assert found["requests"].startswith("2.31.")
    assert found["image_size"] == "[8, 5]"


def test_every_example_parses_and_imports_only_the_compat_package() -> None:
    for path in EXAMPLES.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "runpod_flash" in imported, path
