"""apt's lock held by another apt-get (one left over, or suspended with SIGSTOP): the build waits,
says whose lock it waits for once, and fails after FLASH_APT_LOCK_TIMEOUT naming that pid; once
the holder is gone, the same apt command runs."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openflash import _subprocess
from openflash.deps.apt import Apt
from openflash.deps.apt_locks import lock_held, lock_holder
from openflash.errors import SystemDependencyError

Report = Callable[[str, str, str], None]

#: An address no packet reaches (TEST-NET-1): an apt-get fetching from it waits, holding its lock.
UNREACHABLE = "http://192.0.2.1/debian"


def test_apt_lock_messages_are_parsed() -> None:
    held = lock_held(
        "Reading package lists...\nE: Could not get lock /x/apt/lists/lock. It is held by "
        "process 955 (apt-get)\nE: Unable to lock directory /x/apt/lists/\n"
    )
    assert held is not None and held.path == Path("/x/apt/lists/lock") and held.pid == 955
    unnamed = lock_held(
        "E: Could not get lock /var/lib/dpkg/lock-frontend - open (11: Resource temporarily "
        "unavailable)"
    )
    assert unnamed is not None and unnamed.path == Path("/var/lib/dpkg/lock-frontend")
    assert unnamed.pid is None
    assert lock_held("E: Unable to locate package nosuch") is None


@pytest.fixture
def stopped_apt_get(tmp_path: Path) -> Iterator[tuple[Apt, subprocess.Popen[bytes]]]:
    """A private apt folder, and a real `apt-get update` on it that holds its index's lock
    (fetching from an address that never answers), then stopped with SIGSTOP."""
    apt = Apt(tmp_path / "apt", Path("/var/lib/dpkg/status"), index_ttl=3600)
    with apt.locked():  # its folders, as openflash makes them
        pass
    sources = tmp_path / "unreachable.list"
    sources.write_text(f"deb {UNREACHABLE} bookworm main\n")
    argv = ["apt-get", "-q", *apt.options(), "-o", f"Dir::Etc::sourcelist={sources}"]
    argv += ["-o", "Dir::Etc::sourceparts=-", "-o", "Acquire::http::Timeout=600", "update"]
    holder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = apt.root / "lists" / "lock"
    deadline = time.monotonic() + 60
    while lock_holder(lock) != holder.pid:
        assert holder.poll() is None, "apt-get ended before it took its lock"
        assert time.monotonic() < deadline, "apt-get never took its lock"
        time.sleep(0.02)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        yield apt, holder
    finally:
        holder.kill()
        holder.wait()


def test_an_apt_lock_held_by_a_stopped_apt_get_is_waited_for_then_refused(
    stopped_apt_get: tuple[Apt, subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    report: Report,
) -> None:
    apt, holder = stopped_apt_get
    monkeypatch.setenv("FLASH_APT_LOCK_TIMEOUT", "8")
    caplog.set_level(logging.WARNING, logger="openflash")
    told: list[str] = []
    started = time.monotonic()
    with _subprocess.reporting(told.append), pytest.raises(SystemDependencyError) as info:
        apt.ensure_index(max_age=0)  # `apt-get update` on the same folder
    waited = time.monotonic() - started
    lock = apt.root / "lists" / "lock"
    waiting = [line for line in told if line.startswith("waiting for apt's lock")]
    assert len(waiting) == 1, told
    assert waiting[0].startswith(f"waiting for apt's lock held by pid {holder.pid} (stopped): ")
    assert "apt-get" in waiting[0] and f"({lock})" in waiting[0], waiting
    assert caplog.text.count("waiting for apt's lock held by pid") == 1, caplog.text
    message = str(info.value)
    assert f"waiting for apt's lock held by pid {holder.pid} (stopped)" in message, message
    assert f"kill -CONT {holder.pid}" in message and "FLASH_APT_LOCK_TIMEOUT" in message
    assert holder.poll() is None, "the holder was left alone"

    # once the holder is gone the same command runs (and is not refused for a lock)
    holder.kill()
    holder.wait()
    done = apt._apt_get("update", check=False)
    assert lock_held(done.stdout + done.stderr) is None, done.stderr
    report(
        "builds",
        "apt's index lock held by a real `apt-get update` suspended with SIGSTOP, then an "
        "openflash `apt-get update` on the same folder under `FLASH_APT_LOCK_TIMEOUT=8`",
        f'it waited, said "waiting for apt\'s lock held by pid N (stopped): apt-get ..." once '
        f"after a few seconds, and failed after {waited:.0f} s with SystemDependencyError naming "
        "the pid and `kill -CONT`; with the holder gone, apt ran",
    )


def test_a_lock_freed_while_waiting_lets_the_build_go_on(
    stopped_apt_get: tuple[Apt, subprocess.Popen[bytes]], report: Report
) -> None:
    apt, holder = stopped_apt_get
    told: list[str] = []

    def end_holder_later() -> None:
        time.sleep(4.0)
        holder.kill()

    ender = threading.Thread(target=end_holder_later)
    ender.start()
    try:
        with _subprocess.reporting(told.append):
            done = apt._apt_get("update", check=False)
    finally:
        ender.join()
    assert lock_held(done.stdout + done.stderr) is None, done.stderr
    assert any(line.startswith("waiting for apt's lock held by pid") for line in told), told
    report(
        "builds",
        "apt's index lock held by a suspended `apt-get update`, ended 4 s into openflash's wait",
        "openflash said whose lock it waited for, then ran apt once the lock was free (no error)",
    )
