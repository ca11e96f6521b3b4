import os
import signal
import sys

import pytest

from openflash import _subprocess
from openflash.errors import EnvironmentBuildError, FlashError


def test_captures_output() -> None:
    done = _subprocess.run(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"]
    )
    assert done.ok and done.stdout == "out\n" and done.stderr == "err\n"


def test_failure_raises_the_chosen_error_with_the_stderr_tail() -> None:
    code = "import sys\nfor i in range(50): print('line', i, file=sys.stderr)\nsys.exit(4)"
    with pytest.raises(EnvironmentBuildError) as info:
        _subprocess.run([sys.executable, "-c", code], error=EnvironmentBuildError, hint="do x")
    message = str(info.value)
    assert "failed with exit code 4" in message
    assert "line 49" in message and "line 10\n" not in message
    assert info.value.hint == "do x"


def test_check_false_returns_the_failure() -> None:
    done = _subprocess.run([sys.executable, "-c", "raise SystemExit(2)"], check=False)
    assert done.returncode == 2 and not done.ok


def test_missing_program_and_timeout() -> None:
    with pytest.raises(FlashError, match="program not found"):
        _subprocess.run(["openflash-no-such-program"])
    with pytest.raises(FlashError, match=r"did not finish within 0\.2 s"):
        _subprocess.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)


def test_arguments_are_never_interpreted_by_a_shell(tmp_path) -> None:
    marker = tmp_path / "pwned"
    done = _subprocess.run(["echo", f"$(touch {marker})", ";", "rm", "-rf", "/"])
    assert not marker.exists()
    assert done.stdout.startswith("$(touch")


def test_tail_keeps_the_last_non_empty_lines() -> None:
    assert _subprocess.tail("a\n\nb\nc\n", lines=2) == "b\nc"


def test_lines_are_handed_over_as_they_come_and_still_captured() -> None:
    seen: list[str] = []
    code = "import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\nprint(sys.stdin.read())"
    done = _subprocess.run([sys.executable, "-c", code], input="from stdin", on_line=seen.append)
    assert sorted(seen) == ["from stdin", "one", "two"]
    assert done.stdout == "one\nfrom stdin\n" and done.stderr == "two\n"
    with pytest.raises(FlashError, match="did not finish"):
        _subprocess.run(
            [sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2, on_line=seen.append
        )


def test_reporting_context_receives_command_output_and_reports() -> None:
    seen: list[str] = []
    with _subprocess.reporting(seen.append):
        _subprocess.report("starting")
        _subprocess.run([sys.executable, "-c", "print('hello')"])
    _subprocess.run([sys.executable, "-c", "print('unseen')"])
    _subprocess.report("unseen")
    assert seen == ["starting", "hello"]


PARENT = """
import os, sys, threading, time
from openflash import _subprocess

dies = sys.argv[1] == "1"
threading.Thread(
    target=lambda: _subprocess.run(["sleep", "1000"], check=False, die_with_caller=dies),
    daemon=True,
).start()
while True:
    for entry in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{entry}/stat").read()
            argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and argv[0] == b"sleep":
            print(entry, flush=True)
            os._exit(0)  # as a SIGKILL would: no stop_all, no cleanup
    time.sleep(0.01)
"""


@pytest.mark.parametrize("dies", [True, False])
def test_a_command_dies_with_its_caller_unless_it_must_finish(dies: bool) -> None:
    """A process that ends without stopping its commands takes them along (``setpriv
    --pdeathsig``); with ``die_with_caller=False`` (apt on the host) the command runs on."""
    import subprocess
    import time
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", PARENT, "1" if dies else "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    pid = int(done.stdout.strip())

    def alive() -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    try:
        if dies:
            deadline = time.monotonic() + 60
            while alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not alive(), "the command outlived its caller"
        else:
            assert alive(), "a command that must finish was killed with its caller"
    finally:
        if alive():
            os.kill(pid, signal.SIGKILL)
