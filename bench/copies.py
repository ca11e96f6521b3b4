"""What moving 320 MB costs on this machine, piece by piece, in one process (issue 25, item 3):
a memfd filled through a mapping or with ``pwritev``; a memfd mapped and every page read; 320 MB
through a socketpair into a fresh anonymous mapping (a thread sends), with its context switches;
and a local pickle round trip. Wall and CPU seconds, minor page faults.

Reproduce: ``python -m bench.copies [--mb MB] [--runs R]`` (numpy on the path); under
``taskset -c 0`` for the socketpair on one core.
"""

from __future__ import annotations

import argparse
import mmap
import os
import pickle
import resource
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def measure(name: str, fn: Callable[[], Any]) -> Any:
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    switches = (after.ru_nvcsw - before.ru_nvcsw, after.ru_nivcsw - before.ru_nivcsw)
    print(
        f"{name:44s} wall {wall:.3f} s  cpu {cpu:.3f} s  minor faults "
        f"{after.ru_minflt - before.ru_minflt}  context switches (vol, invol) {switches}",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=320)
    parser.add_argument("--runs", type=int, default=2)
    options = parser.parse_args()
    size = options.mb << 20
    array = np.random.default_rng(0).standard_normal(size // 8)
    raw = memoryview(array).cast("B")
    print(f"load average {os.getloadavg()}", flush=True)

    def through_mapping() -> int:
        fd = os.memfd_create("bench")
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as mapped:
            mapped[:] = raw
        return fd

    def with_pwritev() -> int:
        fd = os.memfd_create("bench")
        offset = 0
        while offset < size:
            offset += os.pwritev(fd, [raw[offset:]], offset)
        return fd

    def map_and_read(fd: int) -> float:
        with mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE) as mapped:
            view = np.frombuffer(mapped, dtype=np.float64)
            total = float(view[::512].sum())  # every page once
            del view
        return total

    def socketpair() -> int:
        ours, theirs = socket.socketpair()
        sender = threading.Thread(target=lambda: (theirs.sendall(raw), theirs.close()))
        sender.start()
        buffer = mmap.mmap(-1, size)
        view = memoryview(buffer)
        got = calls = 0
        while got < size:
            got += ours.recv_into(view[got:])
            calls += 1
        sender.join()
        view.release()
        buffer.close()
        ours.close()
        return calls

    for _ in range(options.runs):
        os.close(measure("memfd filled through a mapping", through_mapping))
        fd = measure("memfd filled with pwritev", with_pwritev)
        measure("memfd mapped, every page read", lambda: map_and_read(fd))  # noqa: B023
        os.close(fd)
        calls = measure("socketpair into a fresh anonymous mapping", socketpair)
        print(f"  ({calls} recv_into calls)")
        measure("local pickle round trip", lambda: pickle.loads(pickle.dumps(array, protocol=5)))


if __name__ == "__main__":
    main()
