"""A builder stopped while it holds an environment's build lock (Ctrl-Z, SIGSTOP): a program
needing that environment says whose build it waits for, and gives up after
FLASH_BUILD_LOCK_TIMEOUT naming that process, instead of waiting without a word for ever."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from helpers import run_python, write

Report = Callable[[str, str, str], None]


def test_a_stopped_builder_is_named_and_the_wait_bounded(
    fresh_home: Path, tmp_path: Path, report: Report
) -> None:
    program = write(
        tmp_path / "program.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="waiter"), dependencies=["six==1.16.0"])
        def which() -> str:
            import six
            return six.__version__

        try:
            print(asyncio.run(which()))
        except Exception as e:
            print(f"{type(e).__name__}: {e}")
            raise SystemExit(3)
        """,
    )
    first = run_python(program)
    assert first.returncode == 0 and first.stdout.strip() == "1.16.0", first.stderr
    (key,) = [p.name for p in (fresh_home / "envs").iterdir()]
    shutil.rmtree(fresh_home / "envs" / key)  # built again: the next program must build it
    # A real process of openflash's store takes the environment's build lock and is stopped.
    building = tmp_path / "building"
    builder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from openflash.envs.store import Store\n"
            "def build(tmp):\n"
            "    pathlib.Path(sys.argv[3]).touch()\n"
            "    time.sleep(600)\n"
            "    return {}\n"
            "Store(pathlib.Path(sys.argv[1])).build_once('envs', sys.argv[2], build)\n",
            str(fresh_home),
            key,
            str(building),
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while not building.exists():
            assert builder.poll() is None and time.monotonic() < deadline, "the builder never ran"
            time.sleep(0.05)
        os.kill(builder.pid, signal.SIGSTOP)
        started = time.monotonic()
        waited = run_python(program, env={"FLASH_BUILD_LOCK_TIMEOUT": "6"}, timeout=120)
        took = time.monotonic() - started
        assert waited.returncode == 3, (waited.stdout, waited.stderr)
        told = f"waiting for pid {builder.pid}'s (stopped) build of envs/{key}"
        assert told in waited.stderr, waited.stderr
        failure = waited.stdout
        assert failure.startswith("EnvironmentBuildError: gave up after 6 s"), failure
        assert f"pid {builder.pid}'s (stopped) build of envs/{key}" in failure, failure
        assert f"kill -CONT {builder.pid}" in failure and "FLASH_BUILD_LOCK_TIMEOUT" in failure
    finally:
        builder.kill()  # SIGKILL ends a stopped process too; its lock goes with it
        builder.wait()
    again = run_python(program, env={"FLASH_BUILD_LOCK_TIMEOUT": "6"})
    assert again.returncode == 0 and again.stdout.strip() == "1.16.0", again.stdout + again.stderr
    report(
        "builds",
        "a process holding an environment's build lock stopped with SIGSTOP, and a program"
        " needing that environment under `FLASH_BUILD_LOCK_TIMEOUT=6`",
        'the program said "waiting for pid N\'s (stopped) build of envs/KEY" after a few'
        f" seconds and failed with EnvironmentBuildError naming the pid and `kill -CONT` after"
        f" {took:.0f} s; once the builder was killed the same program built and ran",
    )
