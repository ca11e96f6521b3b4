"""docs/reliability.md states the trust model: the hand-written section that the reliability
suite's generator (tests/reliability/conftest.py) writes after its table on every rewrite."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = ROOT / "tests" / "reliability" / "trust_model.md"


def test_the_reliability_page_holds_the_trust_model_as_written() -> None:
    page = (ROOT / "docs" / "reliability.md").read_text()
    section = SECTION.read_text()
    assert section.startswith("## The trust model\n")
    assert section in page
    assert page.index("| area | injected | what held |") < page.index("## The trust model")


def test_the_generator_writes_the_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rewrite of the page from a passing run (every file of the suite passed) keeps it."""
    spec = importlib.util.spec_from_file_location(
        "reliability_generator", ROOT / "tests" / "reliability" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    page = tmp_path / "reliability.md"
    monkeypatch.setattr(generator, "DOC", page)
    for test_file in generator.HERE.glob("test_*.py"):
        node = f"tests/reliability/{test_file.name}::test"
        generator._OUTCOMES[node] = True
        generator._ROWS[node] = [("area", "injected", "held")]
    option = types.SimpleNamespace(keyword="", markexpr="")
    session = types.SimpleNamespace(config=types.SimpleNamespace(option=option))
    generator.pytest_sessionfinish(session, 0)
    written = page.read_text()
    assert "| area | injected | held |" in written
    assert written.endswith(SECTION.read_text())
