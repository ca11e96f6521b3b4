"""The worker's namespace launcher, run for real: a private user and mount namespace."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openflash.deps.namespace_mode import layer_mode, namespace_env
from openflash.workers.namespace import (
    NAMESPACE_VARIABLE,
    SETUP_FAILED,
    lingering,
    overlay_targets,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")

needs_namespaces = pytest.mark.skipif(
    not layer_mode().namespaces, reason="this kernel refuses unprivileged namespaces"
)


def launch(layer: Path | None, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **namespace_env(layer), "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "openflash.workers.namespace", "--exec", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_overlay_targets_follow_merged_usr_and_skip_openflash_files(tmp_path: Path) -> None:
    for name in ("usr/share", "etc/fonts", "openflash", "no-such-top-folder"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    assert overlay_targets(str(tmp_path)) == [
        (str(tmp_path / "etc"), "/etc"),
        (str(tmp_path / "usr"), "/usr"),
    ]


@needs_namespaces
def test_a_layer_shows_at_its_real_paths_inside_only(tmp_path: Path) -> None:
    (tmp_path / "usr/share/openflash-test-data").mkdir(parents=True)
    (tmp_path / "usr/share/openflash-test-data/hello.txt").write_text("from the layer\n")
    (tmp_path / "etc/openflash-test").mkdir(parents=True)
    (tmp_path / "etc/openflash-test/conf").write_text("layer conf\n")
    inside = launch(
        tmp_path,
        "sh",
        "-c",
        "cat /usr/share/openflash-test-data/hello.txt /etc/openflash-test/conf; "
        "id -u; ls /usr/bin/env; touch /usr/share/openflash-test-data/x 2>&1 || echo read-only",
    )
    assert inside.returncode == 0, inside.stderr
    lines = inside.stdout.splitlines()
    assert lines[:2] == ["from the layer", "layer conf"]
    assert lines[2] == str(os.getuid())  # the caller's id, not a fake root
    assert lines[3] == "/usr/bin/env"  # the host's files show through
    assert lines[-1] == "read-only"
    assert not Path("/usr/share/openflash-test-data").exists()  # the host sees nothing
    assert not Path("/etc/openflash-test").exists()


@needs_namespaces
def test_user_code_cannot_unmount_its_layer(tmp_path: Path) -> None:
    (tmp_path / "usr/share/openflash-test-data").mkdir(parents=True)
    done = launch(tmp_path, "sh", "-c", "umount /usr 2>/dev/null && echo unmounted || echo kept")
    assert done.stdout.strip() == "kept"


@needs_namespaces
def test_a_namespace_that_cannot_be_set_up_exits_with_its_status(tmp_path: Path) -> None:
    done = launch(tmp_path / "absent-layer", "true")
    assert done.returncode == SETUP_FAILED
    assert "cannot set up the worker's namespace" in done.stderr
    assert "absent-layer" in done.stderr


def _launch_pid(*argv: str, linger: bool = False) -> subprocess.CompletedProcess[str]:
    config = namespace_env(None, pid=True)
    if linger:
        config = {NAMESPACE_VARIABLE: lingering(config[NAMESPACE_VARIABLE])}
    return subprocess.run(
        [sys.executable, "-m", "openflash.workers.namespace", "--exec", *argv],
        env={**os.environ, **config, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _host_pids_running(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(name))
        except (OSError, ValueError):
            continue
    return found


@needs_namespaces
def test_a_pid_namespace_shows_only_its_processes_and_passes_the_status_on() -> None:
    done = _launch_pid("sh", "-c", "echo $$ /proc/[0-9]*; exit 7")  # the shell's own glob
    assert done.returncode == 7, done.stderr
    # The init (1) and the program (2), nothing of the host's.
    assert done.stdout.split() == ["2", "/proc/1", "/proc/2"]
    caller = _launch_pid("cat", f"/proc/{os.getpid()}/environ")
    assert caller.returncode != 0 and "No such file" in caller.stderr
    killed = _launch_pid("sh", "-c", "kill -SEGV $$")
    assert killed.returncode == -11  # the program's signal is the launcher's
    config = namespace_env(None, pid=True)
    sleeper = subprocess.Popen(
        [sys.executable, "-m", "openflash.workers.namespace", "--exec", "sleep", "60"],
        env={**os.environ, **config, "PYTHONPATH": SRC},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(_children_of_children(sleeper.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        sleeper.terminate()  # SIGTERM to the launcher: passed on to the program through the init
        assert sleeper.wait(timeout=30) == -15
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sleeper.pid, 9)


def _children_of_children(pid: int) -> list[int]:
    """Pids whose parent's parent is ``pid`` (the program under the init, seen from here)."""
    parents = {}
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{name}/stat") as f:
            parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
    return [p for p, parent in parents.items() if parents.get(parent) == pid]


@needs_namespaces
@pytest.mark.parametrize("linger", [False, True])
@pytest.mark.parametrize("end", ["exit", "killpg"])
def test_what_the_program_leaves_ends_with_it_unless_the_namespace_lingers(
    linger: bool, end: str
) -> None:
    marker = f"{4000 + os.getpid() % 1000}.{int(linger)}{len(end)}7"  # a unique `sleep` argument
    config = namespace_env(None, pid=True)
    if linger:
        config = {NAMESPACE_VARIABLE: lingering(config[NAMESPACE_VARIABLE])}
    # In a session of its own, as a forked worker is.
    program = f"setsid sleep {marker} >/dev/null 2>&1 & " + (
        "exit 0" if end == "exit" else "sleep 60"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "openflash.workers.namespace", "--exec", "sh", "-c", program],
        env={**os.environ, **config, "PYTHONPATH": SRC},
        start_new_session=True,  # as the backends start templates and workers
    )
    left: list[int] = []
    try:
        if end == "killpg":  # how a template or a worker is stopped: its group killed
            while not _host_pids_running(f"sleep\0{marker}"):
                time.sleep(0.05)
            os.killpg(proc.pid, 9)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 3  # the kernel's kill of a namespace is not instant
        while True:
            left = _host_pids_running(f"sleep\0{marker}")
            if linger or not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        # A template's namespace (linger) keeps its forked workers when the template ends or is
        # killed; a worker's takes whatever the worker left with it.
        assert bool(left) == linger, left
    finally:
        for pid in left:
            os.kill(pid, 9)


@needs_namespaces
def test_a_lingering_init_keeps_none_of_the_launchers_descriptors() -> None:
    """A template's socket to its pool is passed to its launcher, and so reached the init of
    its PID namespace too; an init lingering for the template's workers that kept it would
    keep the pool from seeing the template end (no end of file on the socket while any worker
    forked from it lives: backends/templates.py's reader then waits on, and later fails the
    forks of the template started in its place)."""
    marker = f"{5000 + os.getpid() % 1000}.31"  # a unique `sleep` argument
    config = {NAMESPACE_VARIABLE: lingering(namespace_env(None, pid=True)[NAMESPACE_VARIABLE])}
    ours, theirs = socket.socketpair()
    # The program (the template) leaves a process in the namespace (a worker; Popen closes the
    # socket in it), then ends: only the lingering init could still hold the socket.
    program = (
        "import subprocess; subprocess.Popen(['sleep', '"
        + marker
        + "'], start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL)"
    )
    launcher = [sys.executable, "-m", "openflash.workers.namespace", "--exec"]
    proc = subprocess.Popen(
        [*launcher, sys.executable, "-c", program],
        env={**os.environ, **config, "PYTHONPATH": SRC},
        pass_fds=(theirs.fileno(),),
        start_new_session=True,
    )
    theirs.close()
    left: list[int] = []
    try:
        assert proc.wait(timeout=60) == 0
        left = _host_pids_running(f"sleep\0{marker}")
        assert left, "the namespace did not linger"
        ours.settimeout(10)
        assert ours.recv(1) == b""  # the other end is closed everywhere
    finally:
        ours.close()
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
