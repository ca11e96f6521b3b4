"""Environment builds SIGKILLed at four points, and a build filling its disk.

A user program's first call builds an environment; the test watches the program's process tree
and kills all of it at a chosen point: while uv downloads (an empty uv cache), while uv links the
packages in (warm cache, uv stopped mid-install), after the install while bytecode compiles
before the environment is published (FLASH_BYTECODE=eager), and while the bytecode compiles
after publishing (the default). Each time the next run of the program must build cleanly
and nothing half-built may ever be used: every directory in the store's ``envs/`` is either
complete with its marker or absent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import marshal
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from openflash.envs.bytecode import COMPILER_NAME
from openflash.envs.bytecode_later import is_compiling
from openflash.envs.store import READY_MARKER, Store

from helpers import write

Report = Callable[[str, str, str], None]

PROGRAM = """
import asyncio
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="interrupted"), dependencies=["numpy==2.1.3"])
def version():
    import numpy
    return numpy.__version__

print(asyncio.run(version()))
"""


def _tree(root: int) -> dict[int, str]:
    """``root`` and every process under it, with their command lines."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        todo += children.get(pid, [])
    return found


def _kill_tree(root: int) -> None:
    for pid in _tree(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start(program: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(program)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(
    proc: subprocess.Popen[str], needle: str, without: str = "\0", timeout: float = 120
) -> int:
    """The pid of the first process under ``proc`` whose command line holds ``needle`` (and not
    ``without``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, cmdline in _tree(proc.pid).items():
            if needle in cmdline and without not in cmdline:
                return pid
        if proc.poll() is not None:
            raise AssertionError(f"the program ended before {needle!r} ran: {proc.stderr.read()}")  # type: ignore[union-attr]
        time.sleep(0.002)
    raise AssertionError(f"{needle!r} never ran")


def _sources(environment: Path) -> list[Path]:
    return list(environment.glob("lib/python*/site-packages/numpy/**/*.py"))


def _bytecode_whole(environment: Path) -> int:
    """How many of numpy's sources have a .pyc; each must be whole (it loads), and the
    checked-hash ones openflash writes must be right for their source. (numpy's wheel ships a
    timestamp .pyc of its own, numpy/distutils/conv_template: Python finds it stale and compiles
    the source, as it does in any environment.)"""
    whole = 0
    for source in _sources(environment):
        try:
            pyc = Path(importlib.util.cache_from_source(str(source))).read_bytes()
        except FileNotFoundError:
            continue
        assert pyc[:4] == importlib.util.MAGIC_NUMBER, source
        if int.from_bytes(pyc[4:8], "little") & 1:
            assert pyc[8:16] == importlib.util.source_hash(source.read_bytes()), source
        marshal.loads(pyc[16:])  # a torn file does not load
        whole += 1
    return whole


def _assert_nothing_half_built(home: Path) -> None:
    for env in (home / "envs").glob("*") if (home / "envs").exists() else []:
        assert (env / READY_MARKER).is_file(), f"a half-built environment is in place: {env}"


def _rerun_cleanly(program: Path, env: dict[str, str], home: Path) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(program)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2.1.3"
    _assert_nothing_half_built(home)
    assert [e.key for e in Store(home).entries("envs")], "the environment was built"
    assert not list((home / "tmp").glob("envs-*")), "the interrupted build's files are gone"
    return took


@pytest.fixture
def program(tmp_path: Path) -> Path:
    return write(tmp_path / "interrupted.py", PROGRAM)


def test_builds_killed_while_downloading_installing_and_before_publishing(
    program: Path, tmp_path: Path, report: Report
) -> None:
    cache = tmp_path / "uv-cache"  # empty: the first build downloads numpy
    points = []

    # 1. During the download: uv is syncing from an empty cache.
    home = tmp_path / "home-download"
    env = {"FLASH_HOME": str(home), "FLASH_UV_CACHE_DIR": str(cache)}
    proc = _start(program, env)
    _wait_for(proc, " sync ", without="--offline")  # the cache missed: uv fetches the wheel
    time.sleep(0.05)
    _kill_tree(proc.pid)
    proc.wait(30)
    assert not list(cache.glob("archive-v*/*/numpy/__init__.py")), "the download had finished"
    _assert_nothing_half_built(home)
    partial = list((home / "tmp").glob("envs-*"))
    took = _rerun_cleanly(program, env, home)
    points.append(("while uv downloads numpy (empty cache)", len(partial), took))

    # 2. During the install: uv is stopped while it links files into the new environment.
    home = tmp_path / "home-install"
    env = {"FLASH_HOME": str(home), "FLASH_UV_CACHE_DIR": str(cache)}
    proc = _start(program, env)
    uv = _wait_for(proc, " sync ")
    os.kill(uv, signal.SIGSTOP)
    linked = 0
    for _ in range(500):  # let it run in small steps until numpy's files start to appear
        linked = sum(1 for _ in (home / "tmp").glob("envs-*/lib/python*/site-packages/numpy/*"))
        if linked:
            break
        os.kill(uv, signal.SIGCONT)
        time.sleep(0.002)
        os.kill(uv, signal.SIGSTOP)
    _kill_tree(proc.pid)
    proc.wait(30)
    assert linked, "the install was never caught in progress"
    _assert_nothing_half_built(home)
    took = _rerun_cleanly(program, env, home)
    entries = f"{linked} entr{'y' if linked == 1 else 'ies'}"
    points.append((f"while uv links numpy in ({entries} of numpy's in place)", 1, took))

    # 3. Before publishing: installed, bytecode compiling (a store with no bytecode yet), with
    # FLASH_BYTECODE=eager (compiled before the environment is published).
    home = tmp_path / "home-publish"
    env = {"FLASH_HOME": str(home), "FLASH_UV_CACHE_DIR": str(cache), "FLASH_BYTECODE": "eager"}
    proc = _start(program, env)
    _wait_for(proc, COMPILER_NAME)
    _kill_tree(proc.pid)
    proc.wait(30)
    _assert_nothing_half_built(home)
    took = _rerun_cleanly(program, env, home)
    points.append(
        ("after the install, while bytecode compiles, before publishing (eager)", 1, took)
    )

    # 4. After publishing (the default): the bytecode compiler, a process of its own, is killed
    # with the program. The environment is whole, its bytecode a cache: every .pyc in place is
    # complete and right for its source; the next run's preparation finishes the rest.
    home = tmp_path / "home-background"
    env = {"FLASH_HOME": str(home), "FLASH_UV_CACHE_DIR": str(cache), "FLASH_BYTECODE_NICE": "0"}
    # The program stays after its result (the compiler, its child, may start compiling only
    # after it: the worker runtime is no longer built on the way to the first result).
    lingering = write(tmp_path / "lingering.py", PROGRAM + "\nimport time\ntime.sleep(300)\n")
    proc = _start(lingering, env)
    _wait_for(proc, COMPILER_NAME)
    _kill_tree(proc.pid)
    proc.wait(30)
    _assert_nothing_half_built(home)
    [published] = Store(home).entries("envs")
    assert is_compiling(published.path), "killed before its bytecode was done"
    assert _bytecode_whole(published.path) > 0
    took = _rerun_cleanly(program, env, home)
    deadline = time.monotonic() + 300
    while is_compiling(published.path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_compiling(published.path), "the next run finished the bytecode"
    assert _bytecode_whole(published.path) == len(_sources(published.path))
    points.append(("after publishing, while the bytecode compiles in the background", 1, took))

    for where, _, took in points:
        report(
            "builds",
            f"SIGKILL to the program and uv {where}",
            f"no half-built environment in place; the next run built cleanly in {took:.1f} s "
            "and left no temporary files",
        )


def _in_small_filesystem(script: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run ``sh -c script`` with an 8 MiB tmpfs mounted on ``home`` (in a mount namespace of
    its own when not root, so nothing outlives the test)."""
    home.mkdir(parents=True, exist_ok=True)
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a small filesystem")
    argv = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        argv += ["--user", "--map-root-user"]
    # mode=0700: a fresh tmpfs is 1777, which the store refuses (another user could write it).
    full = f'mount -t tmpfs -o size=8m,mode=0700 tmpfs "$1" || exit 97\n{script}'
    done = subprocess.run(
        [*argv, "sh", "-c", full, "sh", str(home)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode == 97:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return done


def test_the_worker_runtime_built_on_a_full_disk(tmp_path: Path, report: Report) -> None:
    """The worker runtime built with the disk full at each stage (its files, their bytecode,
    its marker): StoreFullError every time, never another error, and nothing partial kept."""
    home = tmp_path / "small-home"
    result = tmp_path / "result.json"
    checker = write(
        tmp_path / "check.py",
        f"""
        import json, os, shutil, sys
        from pathlib import Path
        from openflash.envs.bundle import worker_runtime
        from openflash.envs.store import READY_MARKER, Store
        from openflash.errors import StoreFullError
        home = Path({str(home)!r})
        root = home / "store"
        found = []
        for room in range(0, 1600, 40):  # KiB left free
            filler = home / "filler"
            filler.unlink(missing_ok=True)
            st = os.statvfs(home)
            with open(filler, "wb") as f:
                f.write(bytes(max(0, st.f_bavail * st.f_frsize - room * 1024)))
            try:
                built = worker_runtime(Store(root))
                shutil.rmtree(built)  # built: made again with less room next time
                outcome = ["built"]
            except BaseException as e:
                outcome = [type(e).__name__, isinstance(e, StoreFullError), str(e)[:300]]
            runtimes = root / "runtime"
            partial = [p.name for p in runtimes.glob("*") if not (p / READY_MARKER).exists()]
            tmp = [p.name for p in (root / "tmp").glob("*")]
            found.append([room, outcome, partial, tmp])
        Path({str(result)!r}).write_text(json.dumps(found))
        """,
    )
    done = _in_small_filesystem(f'exec "{sys.executable}" "{checker}"', home)
    assert done.returncode == 0, done.stderr
    found = json.loads(result.read_text())
    failed = [f for f in found if f[1][0] != "built"]
    assert failed and len(failed) < len(found), found  # it failed with little room, built with more
    for room, outcome, partial, tmp in found:
        assert outcome[0] == "built" or outcome[1] is True, (room, outcome)
        assert partial == [] and tmp == [], (room, partial, tmp)
    assert all(f[1][2].startswith("no space left on the device holding ") for f in failed), failed
    report(
        "disk",
        f"the worker runtime built in an 8 MiB filesystem left with 0 to {found[-1][0]} KiB "
        f"free ({len(found)} tries, the disk filling while its files, their bytecode or its "
        "marker were written)",
        f"{len(failed)} tries failed, each with StoreFullError naming the file or store (never another "
        f"error); the other {len(found) - len(failed)} built it; nothing partial kept",
    )


def test_a_build_that_fills_the_disk(
    program: Path, tmp_path: Path, uv_cache: Path, report: Report
) -> None:
    home = tmp_path / "small-home"
    result = tmp_path / "result.json"
    checker = write(
        tmp_path / "check.py",
        f"""
        import json, os, subprocess, sys
        from pathlib import Path
        home = Path({str(home)!r})
        env = {{**os.environ, "FLASH_HOME": str(home), "FLASH_UV_CACHE_DIR": {str(uv_cache)!r}}}
        full = subprocess.run([sys.executable, {str(program)!r}], env=env,
                              capture_output=True, text=True, timeout=600)
        envs = sorted(p.name for p in (home / "envs").glob("*")) if (home / "envs").exists() else []
        tmp = sorted(p.name for p in (home / "tmp").glob("*")) if (home / "tmp").exists() else []
        subprocess.run(["mount", "-o", "remount,size=1g", str(home)], check=True)
        again = subprocess.run([sys.executable, {str(program)!r}], env=env,
                               capture_output=True, text=True, timeout=600)
        Path({str(result)!r}).write_text(json.dumps({{
            "code": full.returncode, "stderr": full.stderr, "envs": envs, "tmp": tmp,
            "again_code": again.returncode, "again_out": again.stdout, "again_err": again.stderr,
        }}))
        """,
    )
    started = time.monotonic()
    done = _in_small_filesystem(f'exec "{sys.executable}" "{checker}"', home)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    found = json.loads(result.read_text())
    assert found["code"] != 0
    # The program's uncaught error: what happened, where, and what to do.
    assert (
        f"openflash.errors.StoreFullError: no space left on the device holding the store {home} "
        "while building envs/" in found["stderr"]
    ), found["stderr"][-3000:]
    assert "No space left on device" in found["stderr"]  # uv's own words, quoted
    assert found["stderr"].strip().splitlines()[-1].startswith("Hint: free some space")
    assert found["envs"] == [] and found["tmp"] == [], "nothing partial kept"
    assert found["again_code"] == 0, found["again_err"]
    assert found["again_out"].strip() == "2.1.3"
    report(
        "disk",
        "a build into an 8 MiB filesystem (tmpfs `FLASH_HOME`)",
        "StoreFullError (an OSError, ENOSPC) naming the store; nothing partial kept; after "
        f"the filesystem grew the same program built and ran ({took:.1f} s in all)",
    )
