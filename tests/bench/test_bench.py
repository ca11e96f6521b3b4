"""The benchmark's own machinery: it runs, it counts disk and memory right, it rejects bad input.

No figure is asserted here (targets live in bench/RESULTS.md); these tests keep `python -m bench`
from rotting and check the counting it reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import cases, disk, scale  # noqa: E402


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_warm_case_runs_end_to_end_and_prints_its_table(tmp_path: Path, uv_cache: Path) -> None:
    done = _bench(
        "--cases", "warm", "--reps", "30", "--no-write",
        env={**os.environ, "FLASH_UV_CACHE_DIR": str(uv_cache), "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| openflash, from Python, to a running worker | 30 |" in done.stdout
    assert "plain in-process call (floor)" in done.stdout
    assert not list(tmp_path.glob("openflash-bench-*")), "the bench left its scratch directory"


def test_unknown_cases_and_sets_are_refused_by_name() -> None:
    done = _bench("--cases", "warm,nope")
    assert done.returncode == 2
    assert "unknown case(s) ['nope']" in done.stderr
    done = _bench("--sets", "huge")
    assert done.returncode == 2
    assert "unknown set(s) ['huge']" in done.stderr


def test_blocks_count_a_hardlinked_file_once(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "data").write_bytes(os.urandom(1 << 20))
    os.link(tmp_path / "a" / "data", tmp_path / "b" / "data")
    alone = disk.blocks(tmp_path / "a")
    together = disk.blocks(tmp_path / "a", tmp_path / "b")
    assert alone >= 1 << 20
    assert together - alone < 64 * 1024  # b adds its directory, not another megabyte


def test_tree_rss_adds_up_every_process_under_the_root() -> None:
    # A child holding 64 MiB, under a shell under us: the sum must include it.
    child = subprocess.Popen(
        [
            "sh",
            "-c",
            f"{sys.executable} -c 'import sys, time; b = bytes(range(256)) * (1 << 18); "
            "print(1, flush=True); time.sleep(30)'",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()
        time.sleep(0.1)
        assert scale.tree_rss(child.pid) >= 64 << 20
        assert scale.tree_rss(os.getpid()) >= scale.tree_rss(child.pid)
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    ("times", "p50", "p99"),
    [([3.0], 3.0, 3.0), ([1.0, 2.0, 3.0, 100.0], 2.5, 100.0), (list(range(1, 102)), 51, 100)],
)
def test_summary_gives_median_and_p99(times: list[float], p50: float, p99: float) -> None:
    stats = cases.summary(times)
    assert (stats["n"], stats["p50"], stats["p99"]) == (len(times), p50, p99)


def test_every_package_set_is_the_user_guides() -> None:
    sets = cases.package_sets()
    assert sets["small"].specs == [
        "requests==2.32.3", "Pillow>=10.0.0", "python-dateutil<3.0.0", "httpx",
    ]  # fmt: skip
    assert sets["medium"].specs == ["pandas", "numpy", "scipy>=1.11.0", "matplotlib"]
    assert sets["none"].specs == []
    assert len(scale.SETS) == 20 and len({tuple(s) for s in scale.SETS}) == 20
