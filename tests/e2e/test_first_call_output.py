"""What a first call shows while its environment builds, and how it stops: real `python app.py`
processes, through a pipe and through a pseudo-terminal, with a package uv must build from
source (tests/sdists.py: its stand-in compiler runs while a file exists); real signals, and
/proc to see that nothing the build started is left."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from openflash.prepare.build_progress import step

from helpers import run_python, write
from sdists import slow_sdist

APP = """
import asyncio
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="slow"), dependencies=["acme-slow=={version}"], find_links=["links"])
def built() -> str:
    import acme_slow
    return "built " + acme_slow.VERSION

print(asyncio.run(built()))
"""


@pytest.fixture
def env(tmp_path: Path, uv_cache: Path, apt_dir: Path) -> dict[str, str]:
    return {
        "FLASH_HOME": str(tmp_path / "home"),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }


def _project(folder: Path, *, hold: bool = False) -> tuple[Path, str, Path, Path]:
    """app.py needing a fresh acme-slow (a new version: never in uv's cache)."""
    version = f"1.0.{uuid.uuid4().int % 10**9}"
    hold_file, pid_file = folder / "hold", folder / "compiler.pid"
    if hold:
        hold_file.write_text("")
    slow_sdist(folder / "links", "acme-slow", version, hold=hold_file, compiler_pid=pid_file)
    return write(folder / "app.py", APP.format(version=version)), version, hold_file, pid_file


def test_steps_are_read_from_uvs_own_lines() -> None:
    assert step("resolving with uv: numpy==1.26.4 six").text == "resolving with uv"
    assert step("Downloading numpy (17.4MiB)") == step("Downloading numpy (17.4MiB)")
    download = step("Downloading numpy (17.4MiB)")
    assert download is not None and download.size == int(17.4 * 1024**2)
    assert step("   Building pyyaml==5.3.1").text == "building pyyaml==5.3.1"
    announced = step(
        "warning: pyyaml==5.3.1 has no wheel for this platform and would be built from source "
        "(slow, needs compilers); pin a release with wheels"
    )
    assert announced is not None and announced.announce
    assert announced.text.endswith("this can take minutes")
    assert step("Installed 2 packages in 42ms").text == "installed 2 packages"
    fetched = step("Prepared 3 packages in 469ms")
    assert fetched is not None and fetched.count == 3
    assert fetched.text == "downloaded or built 3 packages"
    assert step("building environment 0a1b (3 packages)").text == "installing 3 packages"
    assert step("building environment 0a1b (0 packages)") is None  # a bare venv: no news
    for detail in ("numpy==1.26.4", "Resolved 2 packages in 351ms", " + six==1.17.0", ""):
        assert step(detail) is None


#: What `uv pip sync` printed through a pipe installing six, idna and numpy with an empty cache
#: (uv 0.13.9): it names only numpy's download, with its size; the others only in its count.
UV_SYNC = """\
Using Python 3.11.7 environment at: v
Resolved 3 packages in 94ms
Downloading numpy (15.6MiB)
 Downloaded numpy
Prepared 3 packages in 469ms
Installed 3 packages in 35ms
 + idna==3.10
 + numpy==2.1.3
 + six==1.17.0
"""


def test_downloads_show_uvs_count_and_the_bytes_it_names() -> None:
    import io

    from openflash import _subprocess
    from openflash.prepare.build_progress import BuildProgress

    shown = io.StringIO()
    progress = BuildProgress(shown, live=False, quiet=False)
    with progress.showing("numpy"):
        for line in UV_SYNC.splitlines():
            _subprocess.report(line)
    progress.close()
    assert shown.getvalue().splitlines()[:4] == [
        "openflash: numpy: downloading numpy (15.6 MiB); 1 file(s), 15.6 MiB so far",
        "openflash: numpy: downloaded or built 3 packages (15.6 MiB in 1 large file(s); uv "
        "gives no size for smaller ones)",
        "openflash: numpy: installed 3 packages",
        "openflash: numpy: starting a worker",
    ]


def test_a_first_call_shows_its_steps_in_order_through_a_pipe(
    tmp_path: Path, env: dict[str, str]
) -> None:
    app, version, _, _ = _project(tmp_path)
    done = run_python(app, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"built {version}\n"
    label = f"openflash: acme-slow=={version}: "
    lines = [line[len(label) :] for line in done.stderr.splitlines() if line.startswith(label)]
    expected = [
        "resolving with uv",
        f"building acme-slow=={version} from source (it has no wheel for this platform), "
        "this can take minutes",
        "installing 1 package",
        f"building acme-slow=={version}",
        f"built acme-slow=={version}",
        "downloaded or built 1 package",  # uv's count; no size: it names only larger files
        "installed 1 package",
        "starting a worker",
    ]
    assert lines[: len(expected)] == expected, done.stderr
    assert lines[-1].startswith("ready in ") and len(lines) == len(expected) + 1
    # Built once: the next run has nothing to say.
    again = run_python(app, env=env)
    assert again.returncode == 0 and again.stderr == "", again.stderr


def test_flash_quiet_silences_it(tmp_path: Path, env: dict[str, str]) -> None:
    app, version, _, _ = _project(tmp_path)
    done = run_python(app, env={**env, "FLASH_QUIET": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"built {version}\n" and "openflash:" not in done.stderr


def test_a_first_call_on_a_terminal_shows_a_live_progress_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    app, version, _, _ = _project(tmp_path)
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(app)],
        cwd=tmp_path,
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
            except OSError:  # the terminal closed: the program ended
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    assert proc.wait(60) == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert "\x1b[" in text  # drawn in place, not one line per step
    assert "━" in text  # rich's bar
    assert f"building acme-slow=={version} from source" in text
    assert "this can take minutes" in text
    assert "ready in" in text
    # The worker's start is a step of its own: after the build, before the result.
    assert text.index("installed 1 package") < text.index("starting a worker")
    assert text.index("starting a worker") < text.index("ready in") < text.index(f"built {version}")
    assert f"openflash: acme-slow=={version}: installing" not in text  # no plain lines


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _group_members(pgid: int) -> list[int]:
    """The running processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("sig", "codes", "why"),
    [(signal.SIGINT, (130, -signal.SIGINT), "Ctrl-C"), (signal.SIGTERM, (143,), "SIGTERM")],
)
def test_a_stop_during_a_source_build_kills_it_and_keeps_nothing(
    tmp_path: Path, env: dict[str, str], sig: int, codes: tuple[int, ...], why: str
) -> None:
    app, version, hold, compiler_pid = _project(tmp_path, hold=True)
    proc = subprocess.Popen(
        [sys.executable, str(app)],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(compiler_pid, proc)  # the compiler runs, and would run while `hold` exists
        compiler = int(compiler_pid.read_text())
        group = int(Path(f"/proc/{compiler}/stat").read_text().rsplit(")", 1)[1].split()[2])
        assert group != os.getpgid(proc.pid)  # uv leads a group of its own
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        hold.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in codes, err
    assert err.splitlines()[-1] == (
        f"openflash: {why}: stopped the build of acme-slow=={version}; nothing partial was kept"
    ), err
    assert "Traceback" not in err and out == ""
    assert not _alive(compiler)
    assert _group_members(group) == []  # uv, its build backend, the compiler: all gone
    envs = tmp_path / "home" / "envs"
    assert not envs.exists() or list(envs.iterdir()) == []  # nothing published
    # Not remembered as a failed build: the next run builds it and runs.
    done = run_python(app, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"built {version}\n"


def test_a_stop_with_a_call_in_flight_stops_its_worker(tmp_path: Path, env: dict[str, str]) -> None:
    app = write(
        tmp_path / "busy.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="busy"))
        def busy(marker: str) -> None:
            import os, time
            open(marker, "w").write(str(os.getpid()))
            time.sleep(600)

        asyncio.run(busy("worker.pid"))
        """,
    )
    marker = tmp_path / "worker.pid"
    proc = subprocess.Popen(
        [sys.executable, str(app)],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(marker, proc)
    worker = int(marker.read_text())
    assert _alive(worker)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.splitlines() == ["openflash: SIGTERM: stopped 1 call(s) in flight"]
    assert not _alive(worker)
