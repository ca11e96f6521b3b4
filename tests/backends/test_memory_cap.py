"""What the memory cap's watchdog measures, on real processes: a tree's descendants, memory
they allocate, shared memory they map or only hold open (counted once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from openflash.backends.memory_cap import measure, over_cap, tree_pids

MIB = 1 << 20

#: A parent that starts a child; the child holds SIZE bytes of memory of the given kind, prints
#: its pid, and sleeps.
_TREE = r"""
import os, subprocess, sys, time
kind, size = sys.argv[1], int(sys.argv[2])
child = subprocess.Popen([sys.executable, "-c", '''
import mmap, os, sys, time
kind, size = sys.argv[1], int(sys.argv[2])
if kind == "private":
    held = bytearray(size); held[::4096] = b"x" * len(held[::4096])
elif kind == "mapped-twice":  # shared memory mapped by this process and the one it forks
    held = mmap.mmap(-1, size); held.write(b"x" * size)
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
elif kind == "held-open":  # written, never mapped: only the file holds it
    fd = os.memfd_create("openflash-test")
    for _ in range(size // (1 << 20)):
        os.write(fd, b"x" * (1 << 20))
print(os.getpid(), flush=True)
time.sleep(60)
''', kind, str(size)], stdout=subprocess.PIPE)
print(child.stdout.readline().decode().strip(), flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    """(the parent's pid, the child's pid) of a tree holding 64 MiB of ``request.param``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _TREE, request.param, str(64 * MIB)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        yield proc.pid, child
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("tree", ["private"], indirect=True)
def test_a_childs_memory_counts_for_its_tree(tree: tuple[int, int]) -> None:
    parent, child = tree
    assert tree_pids(parent)[:1] == [parent] and child in tree_pids(parent)
    assert child not in tree_pids(parent)[:1]
    used = measure(parent)
    assert used.processes == 2
    assert used.total > 64 * MIB
    assert measure(child).total < used.total  # the child's own tree leaves its parent out


@pytest.mark.parametrize("tree", ["mapped-twice"], indirect=True)
def test_shared_memory_mapped_by_two_processes_counts_once(tree: tuple[int, int]) -> None:
    parent, _ = tree
    used = measure(parent)
    assert used.processes == 3
    assert 64 * MIB <= used.shared < 80 * MIB  # proportional shares: once, not twice
    assert used.total < 2 * 64 * MIB


@pytest.mark.parametrize("tree", ["held-open"], indirect=True)
def test_shared_memory_held_open_unmapped_counts(tree: tuple[int, int]) -> None:
    parent, _ = tree
    used = measure(parent)
    assert used.shared >= 64 * MIB
    assert used.total >= 64 * MIB


def test_a_gone_process_measures_nothing() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert tree_pids(proc.pid) == []
    assert measure(proc.pid).processes == 0


def test_the_error_names_the_cap_and_the_size() -> None:
    from openflash.backends.memory_cap import TreeMemory

    error = over_cap(256 * MIB, TreeMemory(total=400 * MIB, processes=3, shared=300 * MIB))
    assert str(error).startswith(
        "the worker ran out of memory under its cap, FLASH_WORKER_MAX_RSS=268435456 bytes "
        "(256 MiB): its 3 process(es) used 419430400 bytes (400 MiB, 300 MiB of it shared "
        "memory); the worker and every process it started were killed"
    )
    assert "Raise FLASH_WORKER_MAX_RSS" in str(error)
