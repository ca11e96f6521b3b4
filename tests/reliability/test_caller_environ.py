"""A worker outside the namespace mode shares its caller's PID namespace and user id, yet cannot
read the caller's variables: ``flash run`` marks itself not dumpable (runtime/dumpable.py), so its
``/proc/<pid>/environ``, ``mem`` and ``maps`` are root's, and another process of its user is
refused them.

The server runs as a real unprivileged user created for the test (``useradd``, ``setpriv``, as
the store's trust tests do): root could read anything, so only another user shows what the
kernel refuses. The endpoint has neither a system layer nor a volume, so its workers are plain
processes in the server's PID namespace: the first is spawned by the server, later ones are
forked from the endpoint's template. ``FLASH_NON_DUMPABLE=off`` is the control: the same worker
then reads the server's secret, which is what the mark prevents.
"""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from local_users import (
    NEEDS_LOCAL_USERS,
    ROOT,
    LocalUser,
    create_user,
    network_environ,
    readable_venv,
    remove_user,
)

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]

pytestmark = NEEDS_LOCAL_USERS

APP = """
from openflash import CpuLiveServerless, remote


@remote(CpuLiveServerless(name="snoop", workersMax=1, executionTimeoutMs=120_000))
def snoop(caller: int, action: str = "") -> dict:
    import os
    import subprocess
    import sys
    import time

    if action == "exit":  # the next worker is forked from the template
        os._exit(3)
    if action == "children":  # 2 x 160 MiB in child processes: only the tree's watchdog sees it
        code = "import time; b = bytearray(160 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(99)"
        children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
        time.sleep(100)
    seen = {}
    for who, pid in (("caller", caller), ("parent", os.getppid()), ("self", os.getpid())):
        for part in ("environ", "maps", "mem"):
            try:
                with open(f"/proc/{pid}/{part}", "rb") as f:
                    text = f.read().decode(errors="replace") if part == "environ" else "opened"
            except OSError as e:
                text = type(e).__name__
            seen[f"{who} {part}"] = text
    return {"pid": os.getpid(), "ppid": os.getppid(), "seen": seen}
"""

PROGRAM = """
import asyncio, json, os, sys
sys.path.insert(0, os.getcwd())
from app import snoop

print(json.dumps(asyncio.run(snoop(os.getpid()))))
"""


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """A folder the test's user can enter, with a Python it can run."""
    folder = Path(tempfile.mkdtemp(prefix="openflash-dumpable-", dir="/tmp"))
    folder.chmod(0o755)
    readable_venv(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def user(workspace: Path) -> Iterator[LocalUser]:
    person = create_user("flashdump")
    den = workspace / person.name
    den.mkdir(mode=0o700)
    shutil.chown(den, person.name, person.name)
    yield person
    deadline = time.monotonic() + 30  # userdel refuses while a process of the user lives
    while True:
        try:
            remove_user(person)
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _environ(workspace: Path, user: LocalUser, **extra: str) -> dict[str, str]:
    den = workspace / user.name
    return {
        **network_environ(),
        "HOME": str(den),
        "PATH": f"{workspace}/venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT / "src"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "FLASH_HOME": str(den / "flash-home"),
        "FLASH_BYTECODE": "eager",  # no detached compiler outlives the test (userdel)
        "FLASH_QUIET": "1",
        **extra,
    }


def _as_user(workspace: Path, user: LocalUser, env: dict[str, str]) -> str:
    """An executable that runs the venv's Python as ``user`` with ``env`` only (FlashServer's
    ``python``); ``exec`` all the way, so the server's pid is the one FlashServer started."""
    script = workspace / user.name / "as-user"
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    script.write_text(
        "#!/bin/sh\n"
        f"exec setpriv --reuid={user.uid} --regid={user.gid} --clear-groups "
        f'env -i {assignments} {shlex.quote(str(workspace / "venv/bin/python"))} "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


def _project(workspace: Path, user: LocalUser) -> Path:
    project = workspace / user.name / "project"
    write(project / "app.py", APP)
    for path in (project, project / "app.py"):
        shutil.chown(path, user.name, user.name)
    return project


def _snoop(client: httpx.Client, caller: int, action: str = "") -> httpx.Response:
    return client.post("/app/runsync", json={"input": {"caller": caller, "action": action}})


def _serve_and_snoop(
    workspace: Path, user: LocalUser, secret: str, key: str, **extra: str
) -> tuple[list[dict], int]:
    """``flash run`` as ``user`` with ``secret`` in its environment; the answers of a spawned
    worker and of one forked from the template, each told the server's pid; and that pid."""
    env = _environ(
        workspace, user, FLASH_API_KEY=key, AWS_SECRET_ACCESS_KEY=secret, FLASH_FORK="1", **extra
    )
    project = _project(workspace, user)
    server = FlashServer(project, "--no-reload", env={"FLASH_API_KEY": key})
    server.python = _as_user(workspace, user, env)
    with (
        server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=300
        ) as client,
    ):
        assert server.proc is not None
        pid = server.proc.pid
        first = _snoop(client, pid)
        assert first.status_code == 200, (first.text, server.output())
        answers = [first.json()["output"]]
        for _ in range(20):  # until a worker forked from the template answers
            crashed = _snoop(client, pid, "exit")
            assert crashed.status_code == 500, crashed.text
            later = _snoop(client, pid)
            assert later.status_code == 200, (later.text, server.output())
            if later.json()["output"]["ppid"] != pid:
                answers.append(later.json()["output"])
                break
            time.sleep(0.5)
        assert len(answers) == 2, f"no worker was forked from a template:\n{server.output()}"
    return answers, pid


def test_workers_cannot_read_the_servers_environ(
    workspace: Path, user: LocalUser, report: Report
) -> None:
    secret, key = f"secret-{secrets.token_hex(8)}", f"key-{secrets.token_hex(8)}"
    (spawned, forked), pid = _serve_and_snoop(workspace, user, secret, key)
    assert spawned["ppid"] == pid  # a plain worker, in the server's PID namespace
    assert forked["ppid"] != pid  # forked from the template, which the server spawned
    for seen in (spawned["seen"], forked["seen"]):
        for part in ("environ", "maps", "mem"):
            assert seen[f"caller {part}"] == "PermissionError", seen
        assert "AWS_SECRET_ACCESS_KEY" not in str(seen) and secret not in str(seen)
        assert key not in str(seen)
        assert seen["self maps"] == "opened"  # the worker itself is dumpable, as before
    # The template (the forked worker's parent) is dumpable: what it holds is only what every
    # worker is given, never the server's keys.
    assert forked["seen"]["parent maps"] == "opened"
    assert "OPENFLASH_PRELOAD=" in forked["seen"]["parent environ"]
    report(
        "security",
        "a worker with no system layer or volume (in `flash run`'s PID namespace, same user) "
        "reading the server's `/proc/<pid>/environ`, `maps` and `mem`, spawned and forked from "
        "a template",
        "PermissionError for each: `flash run` is not dumpable (`PR_SET_DUMPABLE`, "
        "`FLASH_NON_DUMPABLE`), so its /proc files are root's; the secret and the API key "
        "never reached the answer. With `FLASH_NON_DUMPABLE=off` the same worker read the "
        "secret (the control)",
    )


def test_the_memory_cap_still_measures_a_marked_servers_workers(
    workspace: Path, user: LocalUser
) -> None:
    """The server reads its workers' /proc files (backends/memory_cap.py): workers are exec'd,
    so the kernel made them dumpable again, and the cap on their process tree still holds."""
    key = f"key-{secrets.token_hex(8)}"
    env = _environ(workspace, user, FLASH_API_KEY=key, FLASH_WORKER_MAX_RSS="256M")
    server = FlashServer(_project(workspace, user), "--no-reload", env={"FLASH_API_KEY": key})
    server.python = _as_user(workspace, user, env)
    with (
        server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=300
        ) as client,
    ):
        assert server.proc is not None
        try:
            capped = _snoop(client, server.proc.pid, "children")
        except httpx.HTTPError as e:
            raise AssertionError(server.output()) from e
        assert capped.status_code == 500, capped.text
        assert "MemoryError" in capped.text and "256" in capped.text, capped.text
        assert server.proc.poll() is None, server.output()
        # A new connection: the one that carried the capped call is reset by the server at its
        # next request (seen without the mark too; left to the HTTP edge's owners).
        fresh = httpx.post(
            f"{server.url}/app/runsync",
            json={"input": {"caller": server.proc.pid}},
            headers={"Authorization": f"Bearer {key}"},
            timeout=300,
        )
        assert fresh.status_code == 200, fresh.text  # a new worker answers


def test_without_the_mark_the_secret_is_read(workspace: Path, user: LocalUser) -> None:
    """The control: what the mark prevents does happen without it."""
    secret, key = f"secret-{secrets.token_hex(8)}", f"key-{secrets.token_hex(8)}"
    (spawned, forked), _ = _serve_and_snoop(workspace, user, secret, key, FLASH_NON_DUMPABLE="off")
    for seen in (spawned["seen"], forked["seen"]):
        assert f"AWS_SECRET_ACCESS_KEY={secret}" in seen["caller environ"]
        assert seen["caller maps"] == "opened"


@pytest.mark.parametrize("mode", ["all", "server"])
def test_a_programs_process_is_hidden_when_asked(
    workspace: Path, user: LocalUser, mode: str, report: Report
) -> None:
    """A Python program is the user's own process: marked only with FLASH_NON_DUMPABLE=all."""
    secret = f"secret-{secrets.token_hex(8)}"
    project = _project(workspace, user)
    program = write(project / "program.py", PROGRAM)
    shutil.chown(program, user.name, user.name)
    env = _environ(workspace, user, AWS_SECRET_ACCESS_KEY=secret, FLASH_NON_DUMPABLE=mode)
    done = user.run([str(workspace / "venv/bin/python"), str(program)], env=env, cwd=project)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])["seen"]
    if mode == "all":
        assert seen["caller environ"] == "PermissionError", seen
        assert secret not in str(seen)
        report(
            "security",
            "a worker reading its Python program's `/proc/<pid>/environ` "
            "(`FLASH_NON_DUMPABLE=all`)",
            "PermissionError: the program's process marked itself not dumpable when its "
            "runtime started; by default (`server`) a program stays dumpable, and readable",
        )
    else:
        assert f"AWS_SECRET_ACCESS_KEY={secret}" in seen["caller environ"]
