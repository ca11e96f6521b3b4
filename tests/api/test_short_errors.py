"""A user's mistake, run as a real `python file.py`: the whole of stderr is a few lines that
name the bad value, the line it was written on and the fix; never packaging's or pydantic's
frames (api/short_errors.py). FLASH_VERBOSE=1 still shows everything."""

from __future__ import annotations

from pathlib import Path

from helpers import run_python, write

BAD_SPEC = """
    import asyncio
    from runpod_flash import CpuInstanceType, Endpoint


    @Endpoint(name="stats", cpu=CpuInstanceType.CPU3C_1_2, dependencies=["pandas=2.2.3"])
    async def stats(values: list[float]) -> float:
        return sum(values)


    print(asyncio.run(stats([1.0])))
"""


def test_a_bad_spec_prints_a_few_lines_naming_value_line_and_fix(tmp_path: Path) -> None:
    script = write(tmp_path / "bad.py", BAD_SPEC)
    done = run_python(script, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) <= 10, done.stderr
    assert lines[0] == (
        "Traceback (most recent call last; openflash's own frames left out, "
        "FLASH_VERBOSE=1 shows them):"
    )
    assert lines[1] == f'  File "{script}", line 5, in <module>'
    assert '@Endpoint(name="stats"' in lines[2]
    assert "'pandas=2.2.3' is not a valid requirement" in done.stderr
    assert "Hint: versions are pinned with '==': did you mean 'pandas==2.2.3'?" in done.stderr
    assert lines[-1] == "Hint: versions are pinned with '==': did you mean 'pandas==2.2.3'?"
    assert "packaging" not in done.stderr and "openflash/" not in done.stderr
    assert done.stdout == ""


def test_flash_verbose_keeps_the_whole_chain(tmp_path: Path) -> None:
    script = write(tmp_path / "bad.py", BAD_SPEC)
    done = run_python(script, env={"FLASH_VERBOSE": "1"}, timeout=120)
    assert done.returncode == 1
    assert "packaging.requirements.InvalidRequirement" in done.stderr  # the __cause__
    assert "openflash/deps/specs.py" in done.stderr
    assert len(done.stderr.splitlines()) > 20


def test_a_bad_config_and_a_bad_apt_name_are_short_too(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.py",
        """
        from runpod_flash import CpuLiveServerless

        config = CpuLiveServerless(name="x", workersMax="lots")
        """,
    )
    done = run_python(config, timeout=120)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) <= 8, done.stderr
    assert f'File "{config}", line 3' in done.stderr
    assert "workersMax='lots'" in done.stderr and "Hint: " in done.stderr
    assert "pydantic" not in done.stderr

    apt = write(
        tmp_path / "apt.py",
        """
        from runpod_flash import remote


        @remote(system_dependencies=["ffmpeg libgl1"])
        def convert() -> None: ...
        """,
    )
    done = run_python(apt, timeout=120)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) <= 8, done.stderr
    assert f'File "{apt}", line 4' in done.stderr
    assert "'ffmpeg libgl1'" in done.stderr and "Hint: " in done.stderr


def test_other_exceptions_keep_pythons_own_traceback(tmp_path: Path) -> None:
    script = write(
        tmp_path / "plain.py",
        """
        import openflash


        def inner():
            raise ValueError("not ours")


        inner()
        """,
    )
    done = run_python(script, timeout=120)
    assert done.returncode == 1
    assert "ValueError: not ours" in done.stderr and "line 5, in inner" in done.stderr
    assert "FLASH_VERBOSE" not in done.stderr


def test_flash_discovery_reports_a_bad_file_short(tmp_path: Path) -> None:
    from openflash.project import discover

    write(tmp_path / "bad.py", BAD_SPEC)
    project = discover(tmp_path)
    (failure,) = project.failures
    lines = failure.traceback.splitlines()
    assert lines[1] == f'  File "{tmp_path / "bad.py"}", line 5, in <module>'
    assert "did you mean 'pandas==2.2.3'?" in failure.traceback
    assert "importlib" not in failure.traceback and len(lines) <= 10


def test_a_ctrl_c_with_nothing_of_openflash_running_is_pythons_own(tmp_path: Path) -> None:
    script = write(
        tmp_path / "interrupted.py",
        """
        import openflash

        raise KeyboardInterrupt
        """,
    )
    done = run_python(script, timeout=120)
    assert done.returncode in (130, -2)
    assert "Traceback (most recent call last):" in done.stderr
    assert done.stderr.splitlines()[-1] == "KeyboardInterrupt"
