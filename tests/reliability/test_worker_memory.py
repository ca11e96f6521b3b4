"""FLASH_WORKER_MAX_RSS holds for a worker's whole process tree: memory allocated by child
processes and shared memory count, a worker past the cap is killed with everything it started,
and its caller gets the MemoryError naming the cap and the size measured."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, remote
from openflash.runtime import process

Report = Callable[[str, str, str], None]

#: Bounds a hang, not a speed target (the measured times go to docs/reliability.md).
HANG_LIMIT_S = 30.0
MIB = 1 << 20


@remote(CpuLiveServerless(name="memorycap", executionTimeoutMs=60_000))
def hog(kind: str, size: int, pid_file: str, name: str = "") -> int:
    import os
    import subprocess
    import sys
    import time
    from multiprocessing import shared_memory

    def note(pid: int) -> None:  # each pid as soon as it exists: the watchdog may strike early
        with open(pid_file, "a") as f:
            f.write(f"{pid} ")

    note(os.getpid())
    children = []
    if kind == "children":  # two children of size/2 each, each under the per-process limit
        code = (
            "import sys, time; b = bytearray(int(sys.argv[1])); b[::4096] = b'x' * len(b[::4096]);"
            " print('ok', flush=True); time.sleep(120)"
        )
        for _ in range(2):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", code, str(size // 2)], stdout=subprocess.PIPE
                )
            )
            note(children[-1].pid)
        for child in children:
            if child.stdout is None or child.stdout.readline() != b"ok\n":
                raise RuntimeError("a child could not allocate its share")
    elif kind == "shared":  # filled a MiB at a time: no private copy of the whole
        segment = shared_memory.SharedMemory(name=name, create=True, size=size)
        chunk = b"x" * (1 << 20)
        for offset in range(0, size, len(chunk)):
            segment.buf[offset : offset + len(chunk)] = chunk[: size - offset]
    if kind != "small":
        time.sleep(120)  # holds it until the cap's watchdog ends it
    for child in children:
        child.kill()
    if kind == "small":
        block = bytearray(size)  # in the worker itself, under the cap
        block[::4096] = b"x" * len(block[::4096])
        segment = shared_memory.SharedMemory(name=name, create=True, size=size)
        segment.buf[:size] = bytes(size)
        segment.close()
        segment.unlink()
    return os.getpid()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _call(*args: object) -> tuple[BaseException | int, float]:
    started = time.monotonic()
    try:
        result: BaseException | int = asyncio.run(hog(*args))
    except BaseException as e:  # the error is the result under test
        result = e
    return result, time.monotonic() - started


@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch, flash_home: Path) -> Iterator[None]:
    monkeypatch.setenv("FLASH_WORKER_MAX_RSS", "256M")
    process.shutdown()  # the next call starts a runtime that reads the cap
    yield
    process.shutdown()


def _measured(error: BaseException) -> int:
    found = re.search(r"used (\d+) bytes", str(error))
    assert found, error
    return int(found.group(1))


@pytest.mark.usefixtures("capped")
@pytest.mark.parametrize("kind", ["children", "shared"])
def test_memory_past_the_cap_outside_the_worker_process(
    kind: str, tmp_path: Path, report: Report
) -> None:
    name = f"openflash-test-{os.getpid()}-{kind}"
    pid_file = tmp_path / "pids"
    try:
        small, _ = _call("small", 32 * MIB, str(tmp_path / "small"), name)
        assert isinstance(small, int), small  # under the cap: untouched
        over, took = _call(kind, 400 * MIB, str(pid_file), name)
        assert isinstance(over, MemoryError), over
        assert "FLASH_WORKER_MAX_RSS=268435456 bytes (256 MiB)" in str(over)
        assert _measured(over) > 256 * MIB
        assert took < HANG_LIMIT_S
        pids = [int(p) for p in pid_file.read_text().split()]
        deadline = time.monotonic() + 5
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, pids)), "the worker and its children were killed"
        after, _ = _call("small", 32 * MIB, str(tmp_path / "after"), name + "-after")
        assert isinstance(after, int) and after not in pids, "the next call ran in a new worker"
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/{name}")  # what the killed tree left (files outlive it)
    what = {
        "children": "a call whose two child processes allocate 200 MiB each",
        "shared": "a call filling 400 MiB of `multiprocessing.shared_memory`",
    }[kind]
    report(
        "workers",
        f"{what} under `FLASH_WORKER_MAX_RSS=256M`",
        f"MemoryError naming the cap and the {_measured(over) / MIB:.0f} MiB measured, "
        f"{took:.1f} s after the call (start and allocation included); the worker and its "
        "processes were killed, the next call ran in a new worker, and a call using 32 MiB itself "
        "and 32 MiB of shared memory ran untouched",
    )
