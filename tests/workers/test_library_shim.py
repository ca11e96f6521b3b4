"""The relocated mode's find_library shim, run for real: a launcher, a module, a shared object."""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from openflash.workers.library_shim import LIBRARY_VARIABLE, find_in

SRC = str(Path(__file__).resolve().parents[2] / "src")

PROBE = """
import ctypes, ctypes.util, json, sys
found = ctypes.util.find_library("openflashprobe")
loaded = found is not None and bool(ctypes.CDLL(found))
print(json.dumps({"found": found, "loaded": loaded, "c": ctypes.util.find_library("c"),
                  "argv": sys.argv, "name": __name__}))
"""


@pytest.fixture
def layer_libs(tmp_path: Path) -> Path:
    """A folder with a real shared object under a name no host has: a copy of the C library's
    libm, as ``libopenflashprobe.so.2`` with the links a Debian runtime package ships (no
    ``.so`` link: that is the -dev package's, and with it, where binutils' ld is installed,
    CPython's own find_library finds a library through LD_LIBRARY_PATH)."""
    libm = ctypes.util.find_library("m")
    assert libm
    source = next(p for d in ("/lib", "/usr/lib", "/usr/lib64") for p in Path(d).rglob(libm))
    libs = tmp_path / "usr/lib/x86_64-linux-gnu"
    libs.mkdir(parents=True)
    shutil.copy(source, libs / "libopenflashprobe.so.2.1.0")
    (libs / "libopenflashprobe.so.2").symlink_to("libopenflashprobe.so.2.1.0")
    (libs / "libopenflashprobe-extra.so.1").symlink_to("libopenflashprobe.so.2.1.0")
    (tmp_path / "probe_module.py").write_text(PROBE)
    return libs


def launch(cwd: Path, env: dict[str, str], *argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "openflash.workers.library_shim", *argv],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(cwd)]), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_find_library_finds_the_layer_s_library_first_and_it_loads(layer_libs: Path) -> None:
    env = {
        LIBRARY_VARIABLE: f"/nonexistent{os.pathsep}{layer_libs}",
        "LD_LIBRARY_PATH": str(layer_libs),
    }
    out = launch(layer_libs.parents[2], env, "probe_module", "a", "b")
    assert out["found"] == "libopenflashprobe.so.2"  # the soname-like link, as ldconfig names it
    assert out["loaded"] is True
    assert out["c"] == ctypes.util.find_library("c")  # names the layer lacks: the original
    assert out["name"] == "__main__"
    assert out["argv"][1:] == ["a", "b"]


def test_without_the_variable_find_library_is_untouched(layer_libs: Path) -> None:
    out = launch(layer_libs.parents[2], {"LD_LIBRARY_PATH": str(layer_libs)}, "probe_module")
    assert out["found"] is None
    assert out["c"] == ctypes.util.find_library("c")


def test_find_in_prefers_the_soname_then_the_dev_link_and_skips_other_names(tmp_path: Path) -> None:
    for name in ("libz.so", "libzbar.so.0.3.0", "libzbar-qt.so.0", "libzbar.so", "libzbar.so.0"):
        (tmp_path / name).touch()
    assert find_in([str(tmp_path)], "zbar") == "libzbar.so.0"
    (tmp_path / "libzbar.so.0").unlink()
    assert find_in([str(tmp_path)], "zbar") == "libzbar.so"
    (tmp_path / "libzbar.so").unlink()
    assert find_in([str(tmp_path)], "zbar") == "libzbar.so.0.3.0"
    assert find_in([str(tmp_path / "missing"), str(tmp_path)], "qt") is None
    assert find_in([], "zbar") is None
