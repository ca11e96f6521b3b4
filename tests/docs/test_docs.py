"""The user guide runs: every Python and shell block of docs/ and README.md, as a reader would
run it (see markdown_blocks.py for how a block says what it is), and the pages that are generated
or that list things are complete."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from openflash.cli.reference import render

from markdown_blocks import RUNNABLE, blocks, run_page

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_block_of_the_page_runs(
    page: Path, tmp_path: Path, uv_cache: Path, apt_dir: Path
) -> None:
    env = {
        **os.environ,
        "FLASH_HOME": str(tmp_path / "flash-home"),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
        # A Ray cluster on this machine without a token (a stray ~/.ray token breaks `ray start`).
        "RAY_AUTH_MODE": "disabled",
    }
    for name in ("FLASH_BACKEND", "RAY_ADDRESS", "FLASH_API_KEY", "RUNPOD_API_KEY"):
        env.pop(name, None)
    run_page(page, tmp_path, env)


def test_marks_that_skip_a_block_are_the_exception() -> None:
    runnable = skipped = 0
    for page in PAGES:
        for block in blocks(page.read_text()):
            if block.lang in RUNNABLE:
                runnable += 1
                skipped += "skip" in block.attrs
    assert runnable >= 40
    assert skipped <= runnable // 8, f"{skipped} of {runnable} runnable blocks are skipped"


def test_the_cli_reference_is_generated_from_the_cli() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md is out of date: python -m openflash.cli.reference > docs/cli.md"
    )


def test_the_configuration_page_names_every_setting() -> None:
    names = set()
    for source in (ROOT / "src" / "openflash").rglob("*.py"):
        names |= set(re.findall(r"\b(FLASH_[A-Z_]+[A-Z])\b", source.read_text()))
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_every_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
