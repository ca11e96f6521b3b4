"""FLASH_WORKER_MAX_RSS on a local worker's whole process tree, shared memory included.

The worker caps its own heap with RLIMIT_DATA (workers/child.py: a call that runs out gets a
MemoryError at once). That limit is per process and leaves out shared mappings, so a function
could pass the cap by starting child processes or by filling ``multiprocessing.shared_memory``
(753 MB under a 256 MB cap, measured). ``MemoryWatch`` closes that gap: every
``WATCH_INTERVAL_S`` seconds it measures the tree (``measure``) and, past the cap, kills the
worker and every process of it at once and hands the pool a MemoryError naming the cap and the
measured size, which the calls in flight fail with.

What is measured (``TreeMemory``), from /proc: the worker and its descendants (by parent pid, plus
any process of the worker's session that was re-parented away), each process's proportional set
size (``Pss`` of ``/proc/PID/smaps_rollup``: its private pages, and its share of pages it shares,
shared memory it maps included, so that pages shared by several processes of the tree, or with
the template a worker was forked from, are counted once), plus shared-memory files it holds open
without mapping them (``/dev/shm`` and ``memfd`` files, by their allocated blocks). A watchdog
samples: a function allocating faster than the interval can pass the cap briefly before it is
killed; a process that leaves the worker's session and parentage (``setsid`` and a double fork)
is not counted, nor are files left in ``/dev/shm`` once every process of the tree has closed and
unmapped them (they outlive the worker, as files on disk do).

Cgroups would count all of this in the kernel, but none is delegated to openflash on the machines
it was built on (cgroup v1 with a v2 hierarchy holding only ``hugetlb``), so the watchdog is the
one mechanism, the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["WATCH_INTERVAL_S", "MemoryWatch", "TreeMemory", "measure", "over_cap", "tree_pids"]

#: How often a capped worker's tree is measured, in seconds.
WATCH_INTERVAL_S = 0.2

_SHM = "/dev/shm"


@dataclass(frozen=True, slots=True)
class TreeMemory:
    """A process tree's memory: ``total`` bytes over ``processes`` processes, ``shared`` of them
    in shared memory (mapped, or held open unmapped)."""

    total: int
    processes: int
    shared: int


def _stat_fields(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2 :].split()  # after the command, which may hold spaces
    return int(fields[1]), int(fields[3])


def tree_pids(root: int) -> list[int]:
    """``root`` and every process descending from it or in its session (``root`` first); empty
    if ``root`` is gone."""
    parents: dict[int, list[int]] = {}
    session: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        fields = _stat_fields(pid)
        if fields is None:
            continue
        parents.setdefault(fields[0], []).append(pid)
        if fields[1] == root and pid != root:
            session.append(pid)
    if _stat_fields(root) is None:
        return []
    found = [root]
    seen = {root}
    for pid in found:  # grows while walked: breadth first
        for child in [*parents.get(pid, ()), *(session if pid == root else ())]:
            if child not in seen:
                seen.add(child)
                found.append(child)
    return found


def _rollup(pid: int) -> tuple[int, int]:
    """(Pss, Pss_Shmem) of ``pid`` in bytes; (0, 0) if it is gone or unreadable."""
    pss = shmem = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith(b"Pss_Shmem:"):
                    shmem = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0, 0
    return pss, shmem


def _mapped_files(pid: int) -> set[tuple[int, int]]:
    """(device, inode) of every file ``pid`` maps."""
    found: set[tuple[int, int]] = set()
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps", "rb") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) >= 5 and parts[4] != b"0":
                major, minor = parts[3].split(b":")
                found.add((os.makedev(int(major, 16), int(minor, 16)), int(parts[4])))
    return found


def _open_shared(pid: int, shm_device: int | None) -> dict[tuple[int, int], int]:
    """Shared-memory files ``pid`` holds open: (device, inode) -> allocated bytes."""
    found: dict[tuple[int, int], int] = {}
    folder = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            path = f"{folder}/{name}"
            try:
                target = os.readlink(path)
                info = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            if info.st_dev == shm_device or target.startswith("/memfd:"):
                found[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return found


def _resident(pid: int) -> int:
    """``pid``'s resident set in bytes (``/proc/PID/statm``: kept by the kernel as counters, so
    cheap, and never below its Pss); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _unmapped_shared(pids: list[int]) -> int:
    """Bytes of shared-memory files the processes hold open and none of them maps."""
    try:
        shm_device: int | None = os.stat(_SHM).st_dev
    except OSError:
        shm_device = None
    mapped: set[tuple[int, int]] = set()
    held: dict[tuple[int, int], int] = {}
    for pid in pids:
        mapped |= _mapped_files(pid)
        held.update(_open_shared(pid, shm_device))
    return sum(size for key, size in held.items() if key not in mapped)


def measure(root: int, cap: int | None = None) -> TreeMemory:
    """The memory of ``root``'s tree now (see the module's docstring for what counts).

    With ``cap``: where the tree's resident sets (an upper bound, read at a fraction of the
    cost of walking every page for ``Pss``) stay within it, that bound is returned instead."""
    pids = tree_pids(root)
    unmapped = _unmapped_shared(pids)
    if cap is not None:
        bound = sum(map(_resident, pids)) + unmapped
        if bound <= cap:
            return TreeMemory(total=bound, processes=len(pids), shared=unmapped)
    total = shared = 0
    for pid in pids:
        pss, shmem = _rollup(pid)
        total += pss
        shared += shmem
    return TreeMemory(total=total + unmapped, processes=len(pids), shared=shared + unmapped)


def over_cap(cap: int, used: TreeMemory) -> MemoryError:
    """The caller's error for a worker killed over ``cap`` bytes, having measured ``used``."""
    return MemoryError(
        f"the worker ran out of memory under its cap, FLASH_WORKER_MAX_RSS={cap} bytes "
        f"({cap / 2**20:.0f} MiB): its {used.processes} process(es) used {used.total} bytes "
        f"({used.total / 2**20:.0f} MiB, {used.shared / 2**20:.0f} MiB of it shared memory); "
        "the worker and every process it started were killed, and the worker is replaced for "
        "the next call. Raise FLASH_WORKER_MAX_RSS, or use less memory (child processes and "
        "shared memory count)"
    )


class MemoryWatch:
    """Measures a worker's tree until it exits; past ``cap`` bytes, kills the tree and calls
    ``on_over`` with the MemoryError (once)."""

    def __init__(self, pid: int, cap: int, on_over: Callable[[MemoryError], None]) -> None:
        self.pid = pid
        self.cap = cap
        self._on_over = on_over
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            used = await loop.run_in_executor(None, measure, self.pid, self.cap)
            if used.processes == 0:
                return  # the worker is gone
            if used.total > self.cap:
                self._kill(await loop.run_in_executor(None, tree_pids, self.pid))
                self._on_over(over_cap(self.cap, used))
                return

    def _kill(self, pids: list[int]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self._task.cancel()
