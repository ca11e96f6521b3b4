"""What a worker and the store trust: the server's secrets stay with the server, the store is
never writable by others, and store files another user owns are refused."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, remote
from openflash.envs.store import Store
from openflash.errors import StorePermissionError
from openflash.runtime import process

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]

SECRETS = {
    "FLASH_API_KEY": "server-key",
    "RUNPOD_API_KEY": "runpod-key",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "GITHUB_TOKEN": "gh-token",
    "UNRELATED_SETTING": "x",
}


def test_workers_see_no_variable_of_the_parent_but_those_named(
    monkeypatch: pytest.MonkeyPatch, report: Report, flash_home: Path
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    process.shutdown()

    @remote(CpuLiveServerless(name="env-minimal", env={"GITHUB_TOKEN": "named-on-purpose"}))
    def environment() -> dict:
        import os

        return dict(os.environ)

    seen = asyncio.run(environment())
    leaked = {k for k in SECRETS if k in seen and k != "GITHUB_TOKEN"}
    assert not leaked, f"passed to the worker: {leaked}"
    assert seen["GITHUB_TOKEN"] == "named-on-purpose"
    assert seen["PATH"]
    # HOME is the one variable that no longer passes through: each (environment, layer) pair has
    # a home of its own in the store (issue 21), so that caches one endpoint writes (matplotlib's
    # font list) never hide another's packages and a worker never writes the caller's HOME.
    assert seen["HOME"] != os.environ["HOME"]
    assert seen["HOME"].startswith(str(flash_home)) and "/openflash-home/" in seen["HOME"]
    assert seen["XDG_CACHE_HOME"] == seen["HOME"] + "/.cache"
    assert seen["XDG_CONFIG_HOME"] == seen["HOME"] + "/.config"
    report(
        "security",
        "the parent holding FLASH_API_KEY, RUNPOD_API_KEY, AWS and GitHub secrets",
        "none reached a worker; only the variable its endpoint's env named did",
    )


def test_the_dev_server_binds_loopback_and_refuses_open_binds_without_a_key(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = tmp_path / "project"
    write(
        project / "hello.py",
        """
        from openflash import Endpoint

        @Endpoint(name="hello")
        async def hello(name: str) -> str:
            return f"hello {name}"
        """,
    )
    env = {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    refused = FlashServer(project, "--no-reload", "--host", "0.0.0.0", env=env)
    with pytest.raises(RuntimeError, match=r"refusing to listen on 0\.0\.0\.0"):
        refused.start(timeout=60)
    assert refused.proc is not None and refused.proc.returncode == 2
    with FlashServer(project, "--no-reload", env=env) as server:
        assert "127.0.0.1" in server.output()
        listening = Path("/proc/net/tcp").read_text()
        port_hex = f":{server.port:04X} "
        bound = [line.split()[1] for line in listening.splitlines()[1:] if port_hex in line]
        assert bound and all(addr.startswith("0100007F:") for addr in bound), bound
    report(
        "security",
        "`flash run` with no host, and with `--host 0.0.0.0` and no API key",
        "listens on 127.0.0.1 only by default; the open bind is refused (exit 2) naming "
        "FLASH_API_KEY",
    )


def test_nothing_in_the_store_is_writable_by_others_even_under_umask_0(
    tmp_path: Path, report: Report
) -> None:
    home = tmp_path / "home"  # its uv cache inside it too: uv's files are checked as well
    program = write(
        tmp_path / "lax.py",
        """
        import asyncio, os
        os.umask(0)
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="lax"), dependencies=["six==1.16.0"])
        def version():
            import six
            return six.__version__

        print(asyncio.run(version()))
        """,
    )
    env = {k: v for k, v in os.environ.items() if k != "FLASH_UV_CACHE_DIR"}
    done = subprocess.run(
        [sys.executable, str(program)],
        env={**env, "FLASH_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.16.0"
    writable, checked = [], 0
    for dirpath, dirnames, filenames in os.walk(home):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            checked += 1
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                writable.append(os.path.join(dirpath, name))
    assert checked > 100
    assert not writable, writable[:20]
    report(
        "security",
        "a first call (resolve, download, build) in a program running with umask 0",
        f"none of the {checked} files and directories it created in FLASH_HOME (uv's cache "
        "included) is group- or world-writable",
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
@pytest.mark.usefixtures("flash_home")
def test_store_files_of_another_user_are_refused(flash_home: Path, report: Report) -> None:
    @remote(CpuLiveServerless(name="owned"), dependencies=["six==1.16.0"])
    def version() -> str:
        import six

        return six.__version__

    assert asyncio.run(version()) == "1.16.0"
    [env] = [
        e
        for e in Store(flash_home).entries("envs")
        if "six==1.16.0" in (e.path / "openflash-lock.txt").read_text()
    ]
    os.chown(env.path, 54321, 54321)
    process.shutdown()
    with pytest.raises(StorePermissionError) as info:
        asyncio.run(version())
    assert str(env.path) in str(info.value) and "uid 54321" in str(info.value)
    assert "remove it" in info.value.hint
    os.chown(env.path, 0, 0)

    process.shutdown()
    locks = flash_home / "locks"
    lock = next(locks.glob(f"envs-{env.key}.lock"))
    Store(flash_home).remove("envs", env.key)
    os.chown(lock, 54321, 54321)
    with pytest.raises(StorePermissionError, match="uid 54321"):
        asyncio.run(version())
    os.chown(lock, 0, 0)
    process.shutdown()
    assert asyncio.run(version()) == "1.16.0"
    report(
        "security",
        "an environment directory, then a lock file, given to another user (uid 54321)",
        "each refused with StorePermissionError naming the path and the owner; used again "
        "once given back",
    )
