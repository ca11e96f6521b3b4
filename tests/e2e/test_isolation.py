"""What a worker can import: its declared dependencies, never the host's packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_python, write


@pytest.mark.usefixtures("flash_home")
def test_two_functions_each_see_their_own_six(tmp_path: Path) -> None:
    script = write(
        tmp_path / "two_sixes.py",
        """
        import asyncio
        from runpod_flash import CpuLiveServerless, remote

        config = CpuLiveServerless(name="sixes")

        @remote(resource_config=config, dependencies=["six==1.16.0"])
        async def old_six() -> str:
            import six
            return six.__version__

        @remote(resource_config=config, dependencies=["six==1.17.0"])
        def new_six() -> str:
            import six
            return six.__version__

        @remote(resource_config=config, dependencies=["six==1.17.0"])
        def host_packages() -> list:
            seen = []
            for name in ("pydantic", "typer", "packaging", "uv", "filelock", "httpx"):
                try:
                    __import__(name)
                    seen.append(name)
                except ImportError:
                    pass
            # Only the worker runtime's light client, not the host's package.
            import openflash, runpod_flash
            if openflash.remote.__module__ != "openflash.workers.client":
                seen.append("openflash (full)")
            if "/runtime/" not in runpod_flash.__file__:
                seen.append(runpod_flash.__file__)
            return seen

        async def main():
            print(await old_six(), await new_six(), await host_packages())

        asyncio.run(main())
    """,
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.16.0 1.17.0 []"


@pytest.mark.usefixtures("flash_home")
def test_worker_output_reaches_the_terminal_prefixed_with_the_endpoint(tmp_path: Path) -> None:
    script = write(
        tmp_path / "talk.py",
        """
        import asyncio, sys
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="talker"))
        def talk():
            print("to stdout")
            print("to stderr", file=sys.stderr)
            return "done"

        print(asyncio.run(talk()))
    """,
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert "[talker] to stdout" in done.stdout.splitlines()
    assert "[talker] to stderr" in done.stderr.splitlines()


@pytest.mark.usefixtures("flash_home")
def test_functions_of_an_imported_user_module_travel_by_value(tmp_path: Path) -> None:
    apps = Path(__file__).resolve().parent.parent / "fixtures" / "apps"
    script = write(
        tmp_path / "use_module.py",
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(apps)!r})
        from imported.workers import greet

        print(asyncio.run(greet("ada")))
    """,
    )
    done = run_python(script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "{'text': 'HELLO ADA!', 'six': '1.17.0'}" in done.stdout


@pytest.mark.usefixtures("flash_home")
def test_a_local_wheel_path_is_installed(tmp_path: Path) -> None:
    from helpers import make_wheel

    make_wheel(
        tmp_path / "wheels", "demo_local", "1.2.3", {"demo_local/__init__.py": "ANSWER = 42\n"}
    )
    script = write(
        tmp_path / "use_wheel.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="wheel"),
                dependencies=["./wheels/demo_local-1.2.3-py3-none-any.whl", "six==1.17.0"])
        def answer():
            import demo_local, six
            return demo_local.ANSWER, six.__version__

        print(asyncio.run(answer()))
    """,
    )
    done = run_python(script, cwd=tmp_path / "wheels")  # relative to the file, not the cwd
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(42, '1.17.0')"
