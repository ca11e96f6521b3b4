"""`flash run` shows a build's steps in its log and stops cleanly: a real server, a package uv
must build from source (tests/sdists.py), real signals, and /proc to see that nothing it
started is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from test_first_call_output import _alive, _group_members

from helpers import FlashServer, run_flash, write
from sdists import slow_sdist

SLOW = """
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="slow"), dependencies=["acme-slow=={version}"], find_links=["links"])
def built() -> str:
    import acme_slow
    return "built " + acme_slow.VERSION
"""


@pytest.fixture
def env(tmp_path: Path, uv_cache: Path, apt_dir: Path) -> dict[str, str]:
    return {
        "FLASH_HOME": str(tmp_path / "home"),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }


def _wait_for(path: Path, server: FlashServer) -> None:
    assert server.proc is not None
    while not path.exists():
        assert server.proc.poll() is None, server.output()
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("sig", "codes"),
    [(signal.SIGINT, (130, -signal.SIGINT)), (signal.SIGTERM, (143, -signal.SIGTERM))],
)
def test_a_stop_during_a_build_kills_it_and_says_so(
    tmp_path: Path, env: dict[str, str], sig: int, codes: tuple[int, ...]
) -> None:
    version = f"1.0.{uuid.uuid4().int % 10**9}"
    project = tmp_path / "project"
    hold, compiler_pid = tmp_path / "hold", tmp_path / "compiler.pid"
    hold.write_text("")
    slow_sdist(project / "links", "acme-slow", version, hold=hold, compiler_pid=compiler_pid)
    write(project / "app.py", SLOW.format(version=version))
    server = FlashServer(project, "--no-reload", env=env).start()
    try:
        _wait_for(compiler_pid, server)  # the server builds at start; the compiler runs
        compiler = int(compiler_pid.read_text())
        group = int(Path(f"/proc/{compiler}/stat").read_text().rsplit(")", 1)[1].split()[2])
        assert server.proc is not None
        server.proc.send_signal(sig)
        code = server.proc.wait(60)
    finally:
        hold.unlink(missing_ok=True)
        server.stop()
    log = server.output()
    assert code in codes, log
    # The build's steps were in the log, the source build announced.
    pin = f"acme-slow=={version}"
    assert f"WARNING:  build {pin}: building {pin} from source (it has no wheel" in log, log
    assert f"INFO:     build {pin}: installing 1 package" in log
    stopped = [line for line in log.splitlines() if "stopped" in line]
    assert stopped == [
        f"flash: flash run stopping: stopped the build of {pin}; nothing partial was kept"
    ], log
    assert "Traceback" not in log and "CancelledError" not in log and "failed" not in log
    assert not _alive(compiler) and _group_members(group) == []
    envs = tmp_path / "home" / "envs"
    assert not envs.exists() or list(envs.iterdir()) == []


def test_a_stop_with_a_call_in_flight_stops_its_worker(tmp_path: Path, env: dict[str, str]) -> None:
    project = tmp_path / "project"
    marker = tmp_path / "worker.pid"
    write(
        project / "busy.py",
        f"""
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="busy"))
        def busy() -> None:
            import os, time
            open({str(marker)!r}, "w").write(str(os.getpid()))
            time.sleep(600)
        """,
    )
    server = FlashServer(project, "--no-reload", env=env).start()
    answers: list[object] = []

    def call() -> None:
        try:
            answers.append(
                httpx.post(f"{server.url}/busy/runsync", json={"input": {}}, timeout=120)
            )
        except httpx.HTTPError as e:
            answers.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        _wait_for(marker, server)
        worker = int(marker.read_text())
        assert _alive(worker)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(60)
    finally:
        server.stop()
        caller.join(120)
    log = server.output()
    assert code in (143, -signal.SIGTERM), log
    stopped = [line for line in log.splitlines() if "stopped" in line]
    assert stopped == ["flash: flash run stopping: stopped 1 call(s) in flight"], log
    assert "Traceback" not in log, log
    assert not _alive(worker)
    assert answers  # the caller got an answer or a closed connection, not a hang


def test_the_commands_show_a_builds_steps_through_a_pipe(
    tmp_path: Path, env: dict[str, str]
) -> None:
    version = f"1.0.{uuid.uuid4().int % 10**9}"
    project = tmp_path / "project"
    slow_sdist(
        project / "links",
        "acme-slow",
        version,
        hold=tmp_path / "no-hold",
        compiler_pid=tmp_path / "pid",
    )
    write(project / "app.py", SLOW.format(version=version))
    done = run_flash("env", "build", ".", cwd=project, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    pin = f"acme-slow=={version}"
    lines = [line for line in done.stderr.splitlines() if line.startswith("slow: ")]
    assert lines[0] == "slow: started" and lines[-1].startswith("slow: done")
    assert lines[1:-1] == [
        "slow: resolving with uv",
        f"slow: building {pin} from source (it has no wheel for this platform), this can take minutes",
        "slow: installing 1 package",
        f"slow: building {pin}",
        f"slow: built {pin}",
        "slow: downloaded or built 1 package",
        "slow: installed 1 package",
        # no "compiling bytecode": by default it is compiled after publishing, in the background
    ], done.stderr
    # -q, or FLASH_QUIET=1: only results and errors.
    for args, extra in ((("-q",), {}), ((), {"FLASH_QUIET": "1"})):
        quiet = run_flash(
            "env", "build", ".", *args, cwd=project, env={**env, **extra}, timeout=600
        )
        assert quiet.returncode == 0 and "slow:" not in quiet.stderr, quiet.stderr


def test_sigint_reaches_a_python_program_as_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    """The same stop from `python app.py` with Ctrl-C while a call runs (KeyboardInterrupt)."""
    marker = tmp_path / "worker.pid"
    app = write(
        tmp_path / "busy.py",
        f"""
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="busy"))
        def busy() -> None:
            import os, time
            open({str(marker)!r}, "w").write(str(os.getpid()))
            time.sleep(600)

        asyncio.run(busy())
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, str(app)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    worker = int(marker.read_text())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT), err
    assert err.splitlines() == ["openflash: Ctrl-C: stopped 1 call(s) in flight"], err
    assert not _alive(worker)


def test_the_commands_on_a_terminal_show_a_live_display(
    tmp_path: Path, env: dict[str, str]
) -> None:
    import pty
    import select

    version = f"1.0.{uuid.uuid4().int % 10**9}"
    project = tmp_path / "project"
    slow_sdist(
        project / "links",
        "acme-slow",
        version,
        hold=tmp_path / "no-hold",
        compiler_pid=tmp_path / "pid",
    )
    write(project / "app.py", SLOW.format(version=version))
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "openflash", "env", "build", "."],
        cwd=project,
        env={**os.environ, **env, "TERM": "xterm", "COLUMNS": "160"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    text = seen.decode(errors="replace")
    assert proc.wait(60) == 0, text
    assert "\x1b[" in text  # drawn in place
    assert f"slow: building acme-slow=={version} from source" in text  # announced above it
    assert "slow: started" not in text and "slow: installing" not in text  # no plain lines
    assert "done" in text


@pytest.mark.parametrize(
    ("sig", "codes"), [(signal.SIGINT, (130, -signal.SIGINT)), (signal.SIGTERM, (143,))]
)
def test_a_command_stopped_during_a_build_leaves_nothing_running(
    tmp_path: Path, env: dict[str, str], sig: int, codes: tuple[int, ...]
) -> None:
    version = f"1.0.{uuid.uuid4().int % 10**9}"
    project = tmp_path / "project"
    hold, compiler_pid = tmp_path / "hold", tmp_path / "compiler.pid"
    hold.write_text("")
    slow_sdist(project / "links", "acme-slow", version, hold=hold, compiler_pid=compiler_pid)
    write(project / "app.py", SLOW.format(version=version))
    proc = subprocess.Popen(
        [sys.executable, "-m", "openflash", "env", "build", "."],
        cwd=project,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not compiler_pid.exists():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        compiler = int(compiler_pid.read_text())
        group = int(Path(f"/proc/{compiler}/stat").read_text().rsplit(")", 1)[1].split()[2])
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        hold.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in codes, err
    assert "Traceback" not in err
    why = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    assert err.splitlines()[-1] == (
        f"openflash: {why}: stopped 1 running command(s); nothing partial was kept"
    ), err
    assert "Aborted" not in err, err
    assert not _alive(compiler) and _group_members(group) == []
    envs = tmp_path / "home" / "envs"
    assert not envs.exists() or list(envs.iterdir()) == []


def test_flash_run_quiet_hides_the_build_steps(tmp_path: Path, env: dict[str, str]) -> None:
    version = f"1.0.{uuid.uuid4().int % 10**9}"
    project = tmp_path / "project"
    slow_sdist(
        project / "links",
        "acme-slow",
        version,
        hold=tmp_path / "no-hold",
        compiler_pid=tmp_path / "pid",
    )
    write(project / "app.py", SLOW.format(version=version))
    with FlashServer(project, "--no-reload", env={**env, "FLASH_QUIET": "1"}) as server:
        answer = httpx.post(f"{server.url}/app/built/runsync", json={"input": {}}, timeout=300)
        assert answer.json()["output"] == f"built {version}"
    assert f"build acme-slow=={version}" not in server.output()
