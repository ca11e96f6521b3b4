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
