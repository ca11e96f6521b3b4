"""The store's publishing rules, with real threads and processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from openflash.envs.store import READY_MARKER, Store, content_key


def test_content_key_is_stable_and_discriminating() -> None:
    assert content_key("a", [1, 2]) == content_key("a", [1, 2])
    assert content_key("a", [1, 2]) != content_key("a", [2, 1])
    assert len(content_key("x")) == 24


def test_build_publishes_by_rename_with_a_marker(tmp_path: Path) -> None:
    store = Store(tmp_path)
    seen: list[Path] = []

    def build(tmp: Path) -> dict[str, object]:
        seen.append(tmp)
        assert tmp.parent == tmp_path / "tmp"
        assert not store.is_ready("envs", "k1")
        (tmp / "file").write_text("content")
        return {"note": "hello"}

    path = store.build_once("envs", "k1", build)
    assert path == tmp_path / "envs" / "k1"
    assert (path / "file").read_text() == "content"
    assert store.is_ready("envs", "k1")
    assert '"note": "hello"' in (path / READY_MARKER).read_text()
    assert not seen[0].exists()
    [event] = store.events()
    assert event["event"] == "built" and event["key"] == "k1"


def test_a_ready_entry_is_not_built_again(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.build_once("envs", "k", lambda tmp: {})
    store.build_once("envs", "k", lambda tmp: pytest.fail("built twice"))
    assert len(store.events()) == 1


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def build(tmp: Path) -> dict[str, object]:
        (tmp / "half").write_text("partial")
        raise RuntimeError("installer died")

    with pytest.raises(RuntimeError, match="installer died"):
        store.build_once("envs", "k", build)
    assert not store.path("envs", "k").exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert store.events() == []


def test_leftovers_of_an_interrupted_build_are_not_used_and_are_cleared(tmp_path: Path) -> None:
    store = Store(tmp_path)
    # A build killed after the rename but before the marker, and one killed mid-way.
    unmarked = store.path("envs", "k")
    unmarked.mkdir(parents=True)
    (unmarked / "stale").write_text("x")
    (tmp_path / "tmp" / "envs-k-abc").mkdir(parents=True)
    assert not store.is_ready("envs", "k")
    path = store.build_once("envs", "k", lambda tmp: {})
    assert not (path / "stale").exists()
    assert not (tmp_path / "tmp" / "envs-k-abc").exists()


def test_concurrent_threads_build_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    builds = []
    start = threading.Barrier(8)

    def build(tmp: Path) -> dict[str, object]:
        builds.append(1)
        time.sleep(0.2)
        return {}

    def worker() -> None:
        start.wait()
        store.build_once("envs", "shared", build)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len(store.events()) == 1


def _build_in_process(root: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    Store(Path(root)).build_once("envs", "shared", lambda tmp: time.sleep(0.3) or {})


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_build_in_process, args=(str(tmp_path), barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [e["event"] for e in Store(tmp_path).events()] == ["built"]


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown store kind"):
        Store(tmp_path).path("nope", "k")


def test_entries_list_ready_entries_of_each_kind(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.build_once("envs", "e1", lambda tmp: {"packages": 3})
    store.build_once("layers", "l1", lambda tmp: {"packages": ["ffmpeg=1"]})
    store.path("envs", "half").mkdir(parents=True)  # no marker: not an entry
    [env] = store.entries("envs")
    assert (env.key, env.info["packages"]) == ("e1", 3)
    assert [e.key for e in store.entries("layers")] == ["l1"]
    assert store.entries("runtime") == []


def test_remove_takes_an_entry_away_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    path = store.build_once("layers", "l1", lambda tmp: (tmp / "f").write_text("x") and {})
    assert store.remove("layers", "l1") is True
    assert not path.exists() and not store.is_ready("layers", "l1")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert store.remove("layers", "l1") is False
    assert [e["event"] for e in store.events()] == ["built", "removed"]
    store.build_once("layers", "l1", lambda tmp: {})  # and it can be built again


def test_disk_usage_counts_shared_hardlinks_once_like_du(tmp_path: Path) -> None:
    import os
    import subprocess

    store = Store(tmp_path)

    def build(tmp: Path) -> dict[str, object]:
        (tmp / "own.bin").write_bytes(os.urandom(50_000))
        return {}

    a = store.build_once("envs", "a", build)
    b = store.build_once("envs", "b", build)
    shared = tmp_path / "shared.bin"
    shared.write_bytes(os.urandom(300_000))
    os.link(shared, a / "shared.bin")
    os.link(shared, b / "shared.bin")
    os.symlink("own.bin", b / "link")
    entries = store.entries("envs")
    sizes = store.disk_usage(entries)
    du = subprocess.run(["du", "-sB1", str(a), str(b)], capture_output=True, text=True, check=True)
    expected = {
        f"envs/{Path(line.split()[1]).name}": int(line.split()[0])
        for line in du.stdout.splitlines()
    }
    assert sizes == expected
    assert sizes["envs/a"] > sizes["envs/b"] > 0  # the shared file counts for the first only

    # Folders after the entries, as du's further arguments: a file linked from an entry is not
    # counted again; a missing folder uses nothing.
    extra = tmp_path / "bytecode"
    extra.mkdir()
    os.link(a / "own.bin", extra / "linked.bin")
    (extra / "alone.bin").write_bytes(os.urandom(70_000))
    both = store.disk_usage(entries, {"bytecode": extra, "apt": tmp_path / "nowhere"})
    du = subprocess.run(
        ["du", "-sB1", str(a), str(b), str(extra)], capture_output=True, text=True, check=True
    )
    assert both["bytecode"] == int(du.stdout.splitlines()[-1].split()[0])
    assert 70_000 <= both["bytecode"] < 120_000 and both["apt"] == 0
    assert {k: both[k] for k in expected} == expected


def test_entries_in_use_are_busy_and_not_removed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.build_once("envs", "e", lambda tmp: {})
    assert not store.busy("envs", "e")
    held = store.hold("envs", "e")
    try:
        assert store.busy("envs", "e")
        with pytest.raises(OSError, match="in use by a running openflash process"):
            store.remove("envs", "e")
    finally:
        held.close()
    assert not store.busy("envs", "e")
    store.record_use("envs", "e", "ep1")
    store.record_use("envs", "e", "ep2")
    [entry] = store.entries("envs")
    assert store.usage(entry)["endpoints"] == ["ep1", "ep2"]
    assert store.remove("envs", "e")


def test_a_build_that_fills_the_disk_raises_store_full_and_keeps_nothing(tmp_path: Path) -> None:
    import errno

    from openflash.errors import EnvironmentBuildError, StoreFullError

    store = Store(tmp_path)

    def build(tmp: Path) -> dict:
        (tmp / "half-written").write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "half-written"))

    with pytest.raises(StoreFullError) as info:
        store.build_once("envs", "k", build)
    error = info.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert isinstance(error, EnvironmentBuildError)
    assert f"the store {tmp_path} while building envs/k" in str(error)
    assert "flash env prune" in error.hint
    assert not store.is_ready("envs", "k")
    assert not list((tmp_path / "tmp").iterdir())


def _hold_lock(
    root: str, key: str, held: multiprocessing.Event, release: multiprocessing.Event
) -> None:
    with Store(Path(root)).lock("envs", key):
        held.set()
        release.wait(120)


def test_a_lock_asked_without_waiting_is_refused_at_once_while_another_process_builds(
    tmp_path: Path,
) -> None:
    """``timeout=0`` is "do not wait" (the tmp/ sweep and a second bytecode compiler rely on
    it), not "wait for ever" as FLASH_BUILD_LOCK_TIMEOUT=0 means."""
    from filelock import Timeout

    store = Store(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), "k1", held, release))
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(Timeout), store.lock("envs", "k1", timeout=0):
            pass
        # The sweep skips a live builder's folder instead of waiting for its lock.
        leftover = tmp_path / "tmp" / "envs-k1-abc"
        leftover.mkdir(parents=True)
        swept: list[int] = []
        sweeper = threading.Thread(target=lambda: swept.append(store.sweep_tmp()), daemon=True)
        sweeper.start()
        sweeper.join(60)  # a hang guard: the sweep must not wait for the holder
        assert swept == [0] and leftover.is_dir()
    finally:
        release.set()
        holder.join(60)
    with store.lock("envs", "k1", timeout=0):  # free again: taken at once
        pass
    assert store.sweep_tmp() == 1 and not leftover.exists()


def test_the_sweep_stops_an_orphaned_writer_that_would_make_a_dead_build_again(
    tmp_path: Path,
) -> None:
    """A dead builder's orphaned command (a uv with ``--python tmp/envs-.../bin/python``; here a
    shell loop that makes the folder again and again, standing in for it) is killed before its
    folder is removed, so that the folder stays gone; a process not naming it is left alone."""
    import subprocess

    store = Store(tmp_path)
    leftover = tmp_path / "tmp" / "envs-k2-abc"
    leftover.mkdir(parents=True)
    loop = 'while :; do mkdir -p "$1/lib"; sleep 0.01; done'
    writer = subprocess.Popen(["sh", "-c", loop, "sh", f"{leftover}/bin/python"])
    bystander = subprocess.Popen(["sleep", "1000"])
    try:
        while not (leftover / "bin" / "python" / "lib").is_dir():  # it writes there
            assert writer.poll() is None
            time.sleep(0.01)
        assert store.sweep_tmp() == 1
        assert writer.wait(60) == -9  # killed by the sweep, before the folder went
        assert not leftover.exists()  # and nothing makes it again
        assert bystander.poll() is None
    finally:
        for proc in (writer, bystander):
            proc.kill()
            proc.wait()
