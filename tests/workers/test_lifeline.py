"""workers/lifeline.py on its own: the kernel's parent-death signal fires when the *thread* that
started a process ends, and the lifeline must not take that for its guardian's death; a guardian
already gone when the lifeline is armed is noticed at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

#: A process that arms its lifeline, notes each death signal its lifeline handled and survived,
#: and runs on.
ARMED = """
import os, signal, sys, time
from openflash.workers import lifeline

lifeline.arm()
handler = signal.getsignal(lifeline.LIFELINE_SIGNAL)

def noted(signum, frame):
    handler(signum, frame)  # the lifeline's: had it killed this process, nothing is noted
    with open(sys.argv[1], "a") as f:
        f.write("signal\\n")

signal.signal(lifeline.LIFELINE_SIGNAL, noted)
open(sys.argv[2], "w").close()
time.sleep(1000)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def test_the_end_of_the_thread_that_started_a_worker_is_not_its_parents_death(
    tmp_path: Path,
) -> None:
    noted, ready = tmp_path / "noted", tmp_path / "ready"
    started: list[subprocess.Popen[bytes]] = []

    def start() -> None:  # this thread ends once the process is armed: the kernel then sends
        # the death signal, though this process (its parent) lives on
        started.append(
            subprocess.Popen(
                [sys.executable, "-c", ARMED, str(noted), str(ready)],
                env={**os.environ, "OPENFLASH_PARENT_PID": str(os.getpid())},
            )
        )
        _until(ready.exists, "the process armed its lifeline")

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    proc = started[0]
    try:
        _until(noted.exists, "the death signal of the thread's end was handled")
        assert proc.poll() is None and _alive(proc.pid)  # this process lives: so does it
    finally:
        proc.kill()
        proc.wait()


def test_a_guardian_gone_before_the_lifeline_is_armed_is_noticed_at_once(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names nobody now
    grandchild = tmp_path / "grandchild"
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen(['sleep', '1000'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
        "from openflash.workers import lifeline\n"
        "lifeline.arm(death_signal=False, watch=False)\n"
        "print('armed and alive')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(grandchild)],
        env={**os.environ, "OPENFLASH_PARENT_PID": str(gone.pid)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -9 and "armed and alive" not in done.stdout, done
    pid = int(grandchild.read_text())
    _until(lambda: not _alive(pid), "its child was killed with it")
