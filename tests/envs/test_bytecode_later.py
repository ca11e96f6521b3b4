"""Bytecode compiled after publishing (FLASH_BYTECODE=background): the environment is usable at
once, and while its compiler runs nothing half-written is ever seen: every source in place, every
.pyc either absent or complete and right for its source; a killed compiler is finished by the next
preparation."""

from __future__ import annotations

import importlib.util
import itertools
import json
import marshal
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openflash.envs import bytecode_later
from openflash.envs.bytecode_later import COMPLETE_MARKER, imported, is_compiling
from openflash.envs.environment import Environment, build_environment, environment_key
from openflash.envs.preload_records import PreloadRecord
from openflash.envs.store import Store

from helpers import make_wheel

MODULES = 1200
#: Enough code per module that compiling them all takes a while.
SOURCE = "VALUE = {i}\n" + "".join(
    f"def f{j}(x):\n    y = [x * k for k in range({j} + 3)]\n    return sum(y) + VALUE\n\n"
    for j in range(25)
)


def _environment(tmp_path: Path, uv_cache: Path) -> tuple[Store, str, list[Path]]:
    files = {"manymods/__init__.py": ""}
    files.update({f"manymods/m{i:04d}.py": SOURCE.format(i=i) for i in range(MODULES)})
    wheel = make_wheel(tmp_path / "wheels", "manymods", "1.0", files)
    return Store(tmp_path / "home"), f"manymods @ {wheel.as_uri()}\n", []


def _built_without_its_compiler(store: Store, lock_text: str, uv_cache: Path) -> Environment:
    """The environment published with its bytecode pending, its detached compiler kept out (the
    lock held until that process, which finds it taken, has left): the test runs the compiler."""
    with store.lock("bytecode", environment_key(lock_text)):
        env = build_environment(store, lock_text, uv_cache=uv_cache, compile_later=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
            str(store.root) in _cmdline(pid) for pid in os.listdir("/proc") if pid.isdigit()
        ):
            time.sleep(0.05)
    assert is_compiling(env.path)
    return env


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _sources(env: Environment) -> list[Path]:
    site = next((env.path / "lib").glob("python*/site-packages"))
    return sorted((site / "manymods").glob("*.py"))


def _pyc(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def _check(sources: list[Path]) -> int:
    """Every source is there; every .pyc present is whole and right for its source (checked-hash
    flags, its source's hash, code that loads). Returns how many .pyc are there."""
    present = 0
    for source in sources:
        data = source.read_bytes()  # a missing source raises
        try:
            pyc = _pyc(source).read_bytes()
        except FileNotFoundError:
            continue
        present += 1
        assert pyc[:4] == importlib.util.MAGIC_NUMBER, source
        assert int.from_bytes(pyc[4:8], "little") == 0b11, f"not checked-hash: {source}"
        assert pyc[8:16] == importlib.util.source_hash(data), f"stale: {source}"
        assert marshal.loads(pyc[16:]).co_filename.endswith(source.name), f"torn: {source}"
    return present


def _import_all(env: Environment) -> subprocess.Popen[str]:
    """A second process importing every module while the compiler runs (from source or not)."""
    check = (
        "import importlib\n"
        f"for i in range({MODULES}):\n"
        "    m = importlib.import_module(f'manymods.m{i:04d}')\n"
        "    assert m.VALUE == i and m.f3(1) == 15 + i, i\n"
        "print('ok')\n"
    )
    return subprocess.Popen(
        [str(env.python), "-c", check],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _wait_compiled(env: Environment, sources: list[Path], deadline_s: float = 300) -> set[int]:
    """Check the environment over and over until its compiler is done; the .pyc counts seen."""
    seen = set()
    deadline = time.monotonic() + deadline_s
    while is_compiling(env.path) and time.monotonic() < deadline:
        seen.add(_check(sources))
    assert not is_compiling(env.path), "the compiler did not finish"
    return seen


@pytest.fixture(autouse=True)
def _compiler_not_starved(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiler at the priority of the test: on a busy machine, at 19 it may wait long."""
    monkeypatch.setenv("FLASH_BYTECODE_NICE", "0")


def test_an_environment_compiling_its_bytecode_never_serves_a_half_published_state(
    tmp_path: Path, uv_cache: Path
) -> None:
    store, lock, _ = _environment(tmp_path, uv_cache)
    env = build_environment(store, lock, uv_cache=uv_cache, compile_later=True)
    sources = _sources(env)
    assert len(sources) == MODULES + 1
    # Published with its bytecode to come: usable at once (this is what is tested below).
    assert is_compiling(env.path)
    importer = _import_all(env)
    seen = _wait_compiled(env, sources)
    out, err = importer.communicate(timeout=300)
    assert importer.returncode == 0 and out.strip() == "ok", err
    assert any(0 < n < len(sources) for n in seen), f"never caught mid-compile: {sorted(seen)}"
    assert _check(sources) == len(sources), "every module has its bytecode in the end"
    assert all(_pyc(s).stat().st_nlink == 2 for s in sources), "and the store keeps a copy"
    assert (env.path / COMPLETE_MARKER).is_file()


def test_a_killed_compiler_is_finished_by_the_next_preparation(
    tmp_path: Path, uv_cache: Path
) -> None:
    store, lock, _ = _environment(tmp_path, uv_cache)
    env = build_environment(store, lock, uv_cache=uv_cache, compile_later=True)
    sources = _sources(env)
    compiler = _compiler_pid(env.key)
    os.killpg(compiler, signal.SIGKILL)  # it and its compileall processes
    _check(sources)  # what it left is whole
    assert is_compiling(env.path) and not (env.path / COMPLETE_MARKER).exists()
    again = build_environment(store, lock, uv_cache=uv_cache, compile_later=True)
    assert again.path == env.path
    _wait_compiled(env, sources)
    assert _check(sources) == len(sources)


def test_removing_an_environment_stops_its_compiler(tmp_path: Path, uv_cache: Path) -> None:
    store, lock, _ = _environment(tmp_path, uv_cache)
    env = build_environment(store, lock, uv_cache=uv_cache, compile_later=True)
    compiler = _compiler_pid(env.key)
    assert is_compiling(env.path)
    assert store.remove("envs", env.key)  # at once, not after the compile
    assert not env.path.exists()
    deadline = time.monotonic() + 30
    while _alive(compiler) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(compiler), "the compiler was stopped"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _compiler_pid(key: str, deadline_s: float = 30) -> int:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"openflash.envs.bytecode_later" in argv and key.encode() in argv:
                return int(entry.name)
        time.sleep(0.01)
    raise AssertionError("no bytecode compiler started")


def test_a_compiler_outliving_its_environment_never_makes_it_again(
    tmp_path: Path, uv_cache: Path
) -> None:
    """The compiler is detached on purpose (it outlives the program that built the environment).
    Here the environment is removed behind openflash's back (as `rm -rf` would) while its
    compiler and compileall processes are stopped (SIGSTOP: mid-compile); once they run on, they
    write nothing: no folder of the removed environment is made again, no marker published."""
    import shutil

    store, lock, _ = _environment(tmp_path, uv_cache)
    env = build_environment(store, lock, uv_cache=uv_cache, compile_later=True)
    compiler = _compiler_pid(env.key)
    os.killpg(compiler, signal.SIGSTOP)
    try:
        assert is_compiling(env.path)
        gone = tmp_path / "removed"
        os.rename(env.path, gone)
        shutil.rmtree(gone)
    finally:
        os.killpg(compiler, signal.SIGCONT)
    deadline = time.monotonic() + 120
    while _alive(compiler) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(compiler), "the compiler ended"
    assert not env.path.exists(), sorted(str(p) for p in env.path.rglob("*"))[:5]


def test_the_modules_workers_imported_are_compiled_first(tmp_path: Path, uv_cache: Path) -> None:
    """A learned-preload record (what the first calls imported) appears while the bytecode is
    pending: the compiler compiles its modules in a batch of their own, before the rest."""
    store, lock, _ = _environment(tmp_path, uv_cache)
    env = build_environment(store, lock, uv_cache=uv_cache, compile_later=True)
    os.killpg(_compiler_pid(env.key), signal.SIGKILL)  # the record is written before it runs
    sources = _sources(env)
    _check(sources)  # what the killed one left is whole
    left = [s for s in sources if not _pyc(s).exists() and s.stem != "__init__"]
    wanted = left[-50:]  # the last ones of its order (it compiles sources[i::parts])
    assert len(wanted) == 50, "the killed compiler had not left enough to compile"
    record = PreloadRecord(env.path, "ep")
    assert record.add("f", [f"manymods.{s.stem}" for s in wanted])
    assert imported(env.path) >= set(wanted)
    done = subprocess.run(
        [sys.executable, "-m", "openflash.envs.bytecode_later", str(store.root), env.key],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not is_compiling(env.path) and _check(sources) == len(sources)
    rest = [s for s in left if s not in wanted]
    written = {s: _pyc(s).stat().st_mtime_ns for s in left}
    # The order the files were written in: every wanted one before any of the rest.
    assert max(written[s] for s in wanted) < min(written[s] for s in rest)


def test_what_the_first_worker_will_import_is_compiled_first(
    tmp_path: Path, uv_cache: Path
) -> None:
    """No worker has run yet, so nothing is recorded: the compiler compiles first the files that
    importing the environment's top-level package loads (envs/import_order.py's guess: here 40
    modules its ``__init__`` imports, the last ones of the folder, in an order of their own),
    and only then the rest. The store was empty, so the environment was published without
    hashing its files first: every source counted as pending."""
    loaded = [f"m{i:04d}" for i in range(MODULES - 1, MODULES - 81, -2)]
    files = {"manymods/__init__.py": "".join(f"from . import {name}\n" for name in loaded)}
    files.update({f"manymods/m{i:04d}.py": SOURCE.format(i=i) for i in range(MODULES)})
    wheel = make_wheel(tmp_path / "wheels", "manymods", "1.0", files)
    store = Store(tmp_path / "home")
    env = build_environment(
        store, f"manymods @ {wheel.as_uri()}\n", uv_cache=uv_cache, compile_later=True
    )
    sources = _sources(env)
    marker = json.loads((env.path / ".openflash-ready").read_text())
    assert marker["bytecode"] == {"linked": 0, "pending": len(sources)}
    # Waited for without reading the sources: a process opening one before the compiler gets
    # to it is taken for a worker compiling it itself, and that file left to the second pass.
    deadline = time.monotonic() + 300
    while is_compiling(env.path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _check(sources) == len(sources)
    site = sources[0].parent
    first = [site / "__init__.py", *(site / f"{name}.py" for name in loaded)]
    rest = [s for s in sources if s not in first]
    written = {s: _pyc(s).stat().st_mtime_ns for s in sources}
    # The order the files were written in: every expected one before any of the rest, and
    # those from the last the worker imports to the first (it compiles from the other end).
    assert max(written[s] for s in first) < min(written[s] for s in rest)
    assert all(written[sooner] >= written[later] for sooner, later in itertools.pairwise(first))
    counts = json.loads((env.path / COMPLETE_MARKER).read_text())
    assert (counts["linked"], counts["compiled"]) == (0, len(sources)), counts


def test_files_the_first_worker_opened_before_the_compiler_are_compiled_last(
    tmp_path: Path, uv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiler watches the environment's folders from its start: an expected file that
    another process (the first worker, importing from source) opened while the compiler read
    the files to guess the order is left out of the pass ahead of the worker (the worker
    compiled it in memory) and compiled with the rest, after every other expected file. Here
    the test opens that file, in the worker's place, from inside the guess (a wrapper around
    the real one), so that the open falls between the watch's start and its reading; the
    compiler runs in this process, the detached one kept out by holding its lock."""
    loaded = [f"m{i:04d}" for i in range(MODULES - 1, MODULES - 81, -2)]
    files = {"manymods/__init__.py": "".join(f"from . import {name}\n" for name in loaded)}
    files.update({f"manymods/m{i:04d}.py": SOURCE.format(i=i) for i in range(MODULES)})
    wheel = make_wheel(tmp_path / "wheels", "manymods", "1.0", files)
    store, lock_text = Store(tmp_path / "home"), f"manymods @ {wheel.as_uri()}\n"
    env = _built_without_its_compiler(store, lock_text, uv_cache)
    site = _sources(env)[0].parent
    worker_opened = site / f"{loaded[3]}.py"  # expected early: compiled late in the pass ahead
    real_guess = bytecode_later.predicted_sources

    def guess_while_a_worker_imports(site_packages: Path) -> list[Path]:
        guessed = real_guess(site_packages)
        assert worker_opened in guessed
        worker_opened.read_bytes()  # the worker, importing it from source
        return guessed

    monkeypatch.setattr(bytecode_later, "predicted_sources", guess_while_a_worker_imports)
    assert bytecode_later.main(["compile", str(store.root), env.key]) == 0
    assert not is_compiling(env.path)
    first = [site / "__init__.py", *(site / f"{name}.py" for name in loaded)]
    written = {s: _pyc(s).stat().st_mtime_ns for s in first}
    ahead = [s for s in first if s != worker_opened]
    assert written[worker_opened] > max(written[s] for s in ahead)
    assert all(written[sooner] >= written[later] for sooner, later in itertools.pairwise(ahead))


def test_the_pass_ahead_of_the_worker_runs_at_the_callers_priority_the_rest_lower(
    tmp_path: Path, uv_cache: Path
) -> None:
    """The files the first worker is expected to import are compiled at the priority of the
    program that started the compiler (that pass only does what the worker would otherwise do
    itself); the rest, which no worker waits for, at FLASH_BYTECODE_NICE. The compiler runs in
    a process of its own (nice cannot be lowered again), its two passes recorded as they start
    (each still runs)."""
    files = {"fewmods/__init__.py": "from . import a\n", "fewmods/a.py": "A = 1\n"}
    files.update({f"fewmods/m{i}.py": f"M = {i}\n" for i in range(5)})
    wheel = make_wheel(tmp_path / "wheels", "fewmods", "1.0", files)
    store, lock_text = Store(tmp_path / "home"), f"fewmods @ {wheel.as_uri()}\n"
    env = _built_without_its_compiler(store, lock_text, uv_cache)
    script = tmp_path / "compiler.py"
    script.write_text(
        "import os, sys\n"
        "from openflash.envs import bytecode_later\n"
        "real = bytecode_later.link_bytecode\n"
        "def recorded(*args, **kwargs):\n"
        "    print('ahead' if kwargs.get('only') is not None else 'rest', os.nice(0), flush=True)\n"
        "    return real(*args, **kwargs)\n"
        "bytecode_later.link_bytecode = recorded\n"
        "sys.exit(bytecode_later.main(['compile', sys.argv[1], sys.argv[2]]))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), str(store.root), env.key],
        env={**os.environ, "FLASH_BYTECODE_NICE": "7"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    base = os.nice(0)
    assert done.stdout.split("\n")[:2] == [f"ahead {base}", f"rest {min(19, base + 7)}"]
    assert not is_compiling(env.path)
