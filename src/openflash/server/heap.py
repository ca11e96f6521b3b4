"""The server's long-lived objects kept out of the cyclic garbage collector's scans.

A started ``flash run`` holds a large heap that lives as long as it does (FastAPI, pydantic's
schemas, the project's modules and routes). Python's collector walks every tracked object at
each full collection: measured under the HTTP bench, a full collection took about 200 ms with
this heap, and it comes more often as requests leave survivors, so every such pause lands on the
requests in flight (the p99). ``settle()`` collects once and then freezes what is left
(``gc.freeze``: moved to a generation that is never scanned), after start and after each reload;
a reload first unfreezes, so that replaced routes can be collected.

It also raises the youngest generation's threshold to ``YOUNG_THRESHOLD`` allocations (Python's
default is 700): with 32 requests in flight, a young collection every 700 allocations found
their live objects and promoted them, so that they were later scanned again by the older
generations' collections; measured, about a tenth of the server's CPU per call and a third of
its p99 went. The older generations' thresholds are left as they are. ``unsettle()`` puts the
threshold back.

Large blocks go back to the OS when freed (``large_frees_to_os``, at start): glibc's malloc
serves blocks over its mmap threshold with ``mmap`` and unmaps them at ``free``, but it raises
that threshold to the size of each such block freed (up to 32 MiB), after which large results
(a 15 MiB answer, its JSON text) came from the heap and stayed in the server's RSS when
dropped; measured, 40 kept 15 MiB answers left 698 MB. Fixing the threshold at
``MMAP_THRESHOLD`` turns that off; ``give_back()`` (``malloc_trim``) returns what is free in the
heap after dropping many. Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

__all__ = [
    "MMAP_THRESHOLD",
    "YOUNG_THRESHOLD",
    "give_back",
    "large_frees_to_os",
    "settle",
    "unsettle",
]

MMAP_THRESHOLD = 1 << 20  # bytes: blocks this large are mapped, and unmapped when freed
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter

YOUNG_THRESHOLD = 20_000
_before: list[tuple[int, int, int]] = []  # the thresholds before the first settle()


def settle() -> int:
    """Collect, then freeze every object now alive, and raise the young generation's threshold;
    how many objects are frozen."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if not _before:
        _before.append((young, middle, old))
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
    return gc.get_freeze_count()


def unsettle() -> None:
    """Let the collector scan the frozen objects again and use its thresholds from before."""
    gc.unfreeze()
    if _before:
        gc.set_threshold(*_before.pop())


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def large_frees_to_os() -> bool:
    """Have blocks of ``MMAP_THRESHOLD`` bytes and more mapped (and so unmapped when freed),
    whatever was freed before; whether this C library can (glibc's ``mallopt``)."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def give_back() -> None:
    """Return the heap's free memory to the OS (glibc's ``malloc_trim(0)``); nothing elsewhere."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
