"""Bytecode compiled once per source and hardlinked into environments, checked on import."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from openflash.envs.bytecode import _compile, link_bytecode, prune
from openflash.envs.environment import build_environment
from openflash.envs.store import Store

from helpers import write


def _pyc(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def _loaded_from_bytecode(python: Path, module: str, cwd: Path | None = None) -> bool:
    """Whether ``python`` imports ``module`` from its .pyc (``-v`` names the file it used)."""
    done = subprocess.run(
        [str(python), "-v", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
    )
    return any(
        line.startswith("# code object from ") and f"{module}.cpython" in line
        for line in done.stderr.splitlines()
    )


def test_environments_share_one_compiled_copy(tmp_path: Path, uv_cache: Path) -> None:
    store = Store(tmp_path)
    first = build_environment(store, "six==1.16.0\n", uv_cache=uv_cache)
    second = build_environment(store, "idna==3.7\nsix==1.16.0\n", uv_cache=uv_cache)
    one = _pyc(next((first.path / "lib").glob("python*/site-packages")) / "six.py")
    two = _pyc(next((second.path / "lib").glob("python*/site-packages")) / "six.py")
    assert os.path.samefile(one, two), "the second environment links the first one's bytecode"
    assert one.stat().st_nlink == 3  # both environments and the store
    info = {e.key: e.info["bytecode"] for e in store.entries("envs")}
    assert info[first.key]["compiled"] >= 1
    assert info[second.key]["linked"] >= 1  # six, and the venv's own module
    assert _loaded_from_bytecode(second.python, "six")


def test_changed_source_is_not_served_stale_bytecode(tmp_path: Path) -> None:
    site = tmp_path / "site"
    module = write(site / "mod.py", "VALUE = 1\n")
    link_bytecode(site, Path(sys.executable), tmp_path / "bytecode")
    assert _pyc(module).is_file()
    assert _loaded_from_bytecode(Path(sys.executable), "mod", cwd=site)
    module.write_text("VALUE = 2\n")  # the source hash no longer matches: Python recompiles
    done = subprocess.run(
        [sys.executable, "-c", "import mod; print(mod.VALUE)"],
        capture_output=True,
        text=True,
        cwd=site,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
    )
    assert done.stdout.strip() == "2"


def test_same_source_elsewhere_is_linked_not_compiled(tmp_path: Path) -> None:
    store = tmp_path / "bytecode"
    a = write(tmp_path / "a" / "mod.py", "VALUE = 1\n")
    b = write(tmp_path / "b" / "mod.py", "VALUE = 1\n")
    os.utime(b, (0, 0))  # another copy, another modification time: the same bytecode
    assert link_bytecode(a.parent, Path(sys.executable), store) == {"linked": 0, "compiled": 1}
    assert link_bytecode(b.parent, Path(sys.executable), store) == {"linked": 1, "compiled": 0}
    assert os.path.samefile(_pyc(a), _pyc(b))
    assert _loaded_from_bytecode(Path(sys.executable), "mod", cwd=b.parent)


def test_a_file_that_does_not_compile_is_left_without_bytecode(tmp_path: Path) -> None:
    site = tmp_path / "site"
    bad = write(site / "old.py", "print 'python 2'\n")
    good = write(site / "pkg" / "__init__.py", "X = 1\n")
    result = link_bytecode(site, Path(sys.executable), tmp_path / "bytecode")
    assert result == {"linked": 0, "compiled": 2}
    assert not _pyc(bad).exists()
    assert _pyc(good).is_file()


def test_prune_removes_only_what_nothing_links_to(tmp_path: Path) -> None:
    store = tmp_path / "bytecode"
    kept = write(tmp_path / "kept" / "a.py", "A = 1\n")
    gone = write(tmp_path / "gone" / "b.py", "B = 2\n")
    link_bytecode(kept.parent, Path(sys.executable), store)
    link_bytecode(gone.parent, Path(sys.executable), store)
    _pyc(gone).unlink()  # its environment was removed
    assert prune(store) > 0
    assert len(list(store.rglob("*.pyc"))) == 1
    assert os.path.samefile(next(store.rglob("*.pyc")), _pyc(kept))


def test_a_disk_filling_while_compiling_never_leaves_a_short_pyc(tmp_path: Path) -> None:
    """py_compile (and so compileall) ignores a short ``write``: on a disk that fills up it
    renamed a truncated ``.pyc`` into place, and a worker importing the module failed with
    "marshal data too short" (a clean-clone run hit it on a 1 MiB store). Here, on a small tmpfs,
    a module's bytecode is about twice the room left: it gets none, and a small one that fits
    gets a whole one."""
    from tests.reliability.test_validation import _in_tmpfs

    home = tmp_path / "disk"
    checker = write(
        tmp_path / "check.py",
        f"""
        import marshal, os, sys
        from pathlib import Path
        from openflash.envs.bytecode import _compile
        import importlib.util
        home = Path({str(home)!r})
        small, big = home / "small.py", home / "big.py"
        small.write_text("X = 1\\n")
        big.write_text("DATA = " + repr("x" * 80_000) + "\\n")
        (home / "__pycache__").mkdir()
        fd = os.open(home / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        os.ftruncate(fd, os.fstat(fd).st_size - 40_960)  # ten pages free
        os.close(fd)
        _compile(Path(sys.executable), [small, big])
        for source in (small, big):
            pyc = Path(importlib.util.cache_from_source(str(source)))
            if not pyc.exists():
                print(source.name, "none")
                continue
            try:
                marshal.loads(pyc.read_bytes()[16:])
                print(source.name, "whole")
            except (EOFError, ValueError):
                print(source.name, "short")
        """,
    )
    env = f'PYTHONPATH="{Path(__file__).resolve().parents[2] / "src"}"'
    done = _in_tmpfs(f'{env} exec "{sys.executable}" "{checker}"', home, "256k")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["small.py whole", "big.py none"], done.stdout


@pytest.mark.parametrize("ahead", [True, False], ids=["ahead-of-a-worker", "every-file"])
def test_a_file_a_worker_opened_first_is_left_to_the_next_pass(tmp_path: Path, ahead: bool) -> None:
    """Ahead of a worker importing from source (``only``'s pass, envs/bytecode_later.py), the
    compiler leaves out a file the worker opened before the compiler got to it: the worker
    compiled it in memory; compiling it too is CPU taken from the files the worker has not
    reached yet. The next pass compiles it. Ordered without timing: the compiler's first file is
    a FIFO, so it waits there (its folders watched already) while this test, in a worker's
    place, reads a later file; without ``skip_opened`` that file is compiled all the same."""
    site = tmp_path / "site-packages"
    site.mkdir()
    gate = site / "gate.py"
    os.mkfifo(gate)
    later = write(site / "later.py", "A = 1\n")
    opened = write(site / "opened.py", "B = 2\n")
    compiler = threading.Thread(
        target=_compile,
        args=(Path(sys.executable), [gate, later, opened]),
        kwargs={"skip_opened": ahead},
    )
    compiler.start()
    with open(gate, "w") as f:  # returns once the compiler opened the gate
        opened.read_bytes()  # the worker
        f.write("G = 0\n")
    compiler.join(60)
    assert not compiler.is_alive()
    assert _pyc(gate).is_file() and _pyc(later).is_file()
    assert _pyc(opened).is_file() is not ahead
    gate.unlink()
    link_bytecode(site, Path(sys.executable), tmp_path / "store")  # the next pass
    assert _pyc(opened).is_file() and _loaded_from_bytecode(
        Path(sys.executable), "opened", cwd=site
    )
