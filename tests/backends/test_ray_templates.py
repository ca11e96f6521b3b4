"""A Ray node's templates without Ray: ``NodeTemplates`` (what the node's agent runs) starts a
real template of a real environment, and another party (a worker actor, here this test) forks a
worker from it through its socket and is told the worker's exit."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

from openflash.backends.local import worker_environ
from openflash.backends.ray_templates import AttachedTemplate, NodeTemplates, TemplateRequest
from openflash.backends.targets import LocalTarget
from openflash.backends.templates import TemplateKey
from openflash.workers.port import WorkerSpec


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_a_node_template_forks_for_another_process_and_tells_it_the_exit(
    bare_spec: WorkerSpec,
) -> None:
    target = bare_spec.target
    assert isinstance(target, LocalTarget)
    env = worker_environ(bare_spec, target, (), False)
    request = TemplateRequest(TemplateKey.of(bare_spec, target, env), Path.cwd())
    templates = NodeTemplates()

    async def fork_one(path: str) -> tuple[int, int, int | None]:
        template = AttachedTemplate(path)
        ours, theirs = socket.socketpair()
        try:
            worker = await template.fork(env, 1, theirs.fileno())
            theirs.close()
            parent = parent_of(worker.pid)
            os.kill(worker.pid, signal.SIGKILL)
            code = await asyncio.wait_for(worker.wait(), 30)
        finally:
            ours.close()
            await template.close()
        return worker.pid, parent, code

    try:
        # The first asker is told to spawn while the template starts; the next waits for it.
        assert templates.socket_for(request) == (None, "the template is starting")
        path, why = templates.socket_for(request)
        assert path is not None and why == "", why
        assert Path(path).parent.stat().st_mode & 0o777 == 0o700  # this user's only
        pid, parent, code = asyncio.run(fork_one(path))
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            assert b"openflash.workers.forkserver" in f.read()
        assert parent not in (os.getpid(), pid) and code == -signal.SIGKILL
        assert templates.socket_for(request) == (path, "")  # the same template, still there
    finally:
        templates.close()
    assert not Path(path).exists()
