"""Worker templates: one process per environment that has done the endpoint's imports, forking
each new worker in milliseconds (the process side is workers/forkserver.py).

``Template`` starts and talks to one template (its forked workers are backends/forked.py's
``ForkedProcess``). The template is the forked workers' parent: it reports their exit status.
It dies when this process dies, and so do its workers, each with the processes its calls
started (``workers.lifeline``). If it dies alone, its workers run on (calls in flight are
unaffected), and a worker that later ends has an unknown status; the next fork starts a new
template.

A template imports its declared modules, then what its endpoint's workers were seen importing
(the learned record, read when it starts: envs/preload_records.py). It outlives its workers: it
stops only once ``idle_timeout`` seconds (FLASH_TEMPLATE_IDLE_TIMEOUT) have passed with no worker
of its own alive and no fork asked of it, so that a pool scaled to zero forks its next worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openflash.backends.forked import ForkedProcess, reader_for, receive
from openflash.backends.template_keys import (
    LearnedUnsafe,
    TemplateKey,
    TemplateStuck,
    TemplateUnsafe,
)
from openflash.backends.worker_view import worker_main
from openflash.envs.preload_records import learned_modules
from openflash.envs.store import write_atomic
from openflash.envs.trust import check_levels
from openflash.workers.crashes import process_stopped
from openflash.workers.lifeline import PARENT_VARIABLE
from openflash.workers.namespace import NAMESPACE_VARIABLE, lingering

__all__ = [
    "FORK_ANSWER_S",
    "LearnedUnsafe",
    "Template",
    "TemplateKey",
    "TemplateStuck",
    "TemplateUnsafe",
]

logger = logging.getLogger("openflash")

#: How long a template may take to import its modules.
READY_TIMEOUT_S = 600.0
#: How long a started template may take to answer a fork request (it takes milliseconds).
FORK_ANSWER_S = 10.0
_MESSAGE_MAX = 1 << 20


class Template:
    """One template process for an environment, its imports and its worker environment."""

    def __init__(
        self,
        python: Path,
        env: dict[str, str],
        cwd: Path,
        preload: tuple[str, ...],
        registry: Path | None = None,
        *,
        learned: Path | None = None,
        idle_timeout: float | None = None,
        on_idle: Callable[[Template], None] | None = None,
    ) -> None:
        self.python = python
        #: The learned record read at each start (None: declared imports only).
        self.learned = learned
        #: How long it stays with no worker of its own and no fork (None: until closed); then
        #: ``on_idle`` is told, and closes it.
        self.idle_timeout = idle_timeout
        self._on_idle = on_idle
        self._idle: asyncio.TimerHandle | None = None
        self.learned_count = 0
        #: A folder where a running template leaves a note (``flash env ls`` lists them).
        self.registry = registry
        self.env = env
        self.cwd = cwd
        self.preload = preload
        self.pid: int | None = None
        self.preloaded: list[str] = []
        self.failed: dict[str, str] = {}
        self.forks = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._started: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._next_id = 0
        #: Fork requests waiting for their answer: the pid, and its exit status to come.
        self._waiting: dict[int, asyncio.Future[tuple[int, asyncio.Future[int | None]]]] = {}
        #: The exit status of each forked worker, as the template reports it.
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._reader: asyncio.Task[None] | None = None
        #: The last lines the template printed (its imports' output is not shown).
        self.output: collections.deque[str] = collections.deque(maxlen=20)
        self._drain: asyncio.Future[None] | None = None

    @property
    def starting(self) -> bool:  # importing its modules, not ready yet
        return self._started is not None and not self._started.done()

    @property
    def process_pid(self) -> int | None:  # known from its start (``pid``: once it is ready)
        return self._proc.pid if self._proc is not None else self.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def _in_pid_namespace(self) -> bool:
        """Whether it runs in a PID namespace (its pids are not this process's)."""
        config = json.loads(self.env.get(NAMESPACE_VARIABLE) or "{}")
        return bool(config.get("pid"))

    async def ensure_started(self) -> None:
        """Start the template (again, if it died); raise TemplateUnsafe if it cannot fork."""
        if self._started is None or (self._started.done() and not self.alive):
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        learned = learned_modules(self.learned) if self.learned else ()
        env = {
            **self.env,
            "OPENFLASH_PRELOAD": json.dumps(list(self.preload)),
            "OPENFLASH_PRELOAD_LEARNED": json.dumps([m for m in learned if m not in self.preload]),
            PARENT_VARIABLE: str(os.getpid()),  # it dies with this process (workers.lifeline)
        }
        main = worker_main(env, ["openflash.workers.forkserver", str(theirs.fileno())])
        if NAMESPACE_VARIABLE in env:  # its forks share the namespace it starts in
            main = ["openflash.workers.namespace", *main]
            # and it stays until they have ended, as they outlive the template outside one
            env[NAMESPACE_VARIABLE] = lingering(env[NAMESPACE_VARIABLE])
        try:
            self._proc = await asyncio.create_subprocess_exec(
                str(self.python),
                "-m",
                *main,
                stdin=asyncio.subprocess.DEVNULL,
                # What its imports print is not shown: the endpoint's first worker, spawned
                # beside it, imports the same and prints it once with its prefix (workers forked
                # later have it imported). The last lines are kept for a failed start.
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                cwd=str(self.cwd),
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            ours.close()
            raise TemplateUnsafe(f"the template could not start: {e}") from e
        finally:
            theirs.close()
        assert self._proc.stdout is not None
        self._drain = asyncio.ensure_future(_drain(self._proc.stdout, self.output))
        ours.setblocking(False)
        self._sock = ours
        try:
            raw, pid = await asyncio.wait_for(receive(ours, _MESSAGE_MAX), READY_TIMEOUT_S)
        except (TimeoutError, OSError) as e:
            self._kill()
            raise TemplateUnsafe(f"the template did not get ready: {e}") from e
        if not raw:
            self._kill()
            await asyncio.wait([self._drain], timeout=1)
            said = "\n".join(self.output)
            raise TemplateUnsafe(
                "the template exited before it was ready" + (f":\n{said}" if said else "")
            )
        ready = json.loads(raw)
        if ready.get("unsafe"):
            self._kill()
            unsafe = LearnedUnsafe if ready.get("unsafe_learned") else TemplateUnsafe
            raise unsafe(str(ready["unsafe"]))
        self.pid = pid or int(ready["pid"])  # as this process sees it (PID namespaces)
        self.preloaded = list(ready.get("preloaded", []))
        self.failed = dict(ready.get("failed", {}))
        self.learned_count = int(ready.get("learned", 0))
        self._reader = asyncio.ensure_future(self._read())
        self._register()
        self._arm_idle()

    def _arm_idle(self) -> None:
        """(Re)start the idle clock: it runs while no worker of this template is alive."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.idle_timeout is None or self._on_idle is None:
            return
        if not self._exits and not self._waiting:
            self._idle = asyncio.get_running_loop().call_later(self.idle_timeout, self._idled)

    def _idled(self) -> None:
        self._idle = None
        if self._exits or self._waiting or not self.alive:
            return
        logger.debug("openflash: template %s idle for %gs: stopped", self.pid, self.idle_timeout)
        if self._on_idle is not None:
            self._on_idle(self)

    async def fork(self, env: dict[str, str], max_concurrency: int, sock_fd: int) -> ForkedProcess:
        """A new worker with ``sock_fd`` as its socket to the pool; TemplateStuck when the
        started template does not answer within FORK_ANSWER_S (stopped, or hung)."""
        await self.ensure_started()
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            async with self._lock:
                assert self._sock is not None
                self._next_id += 1
                request_id = self._next_id
                waiting = self._waiting[request_id] = loop.create_future()
                message = {
                    "op": "fork",
                    "id": request_id,
                    "max_concurrency": max_concurrency,
                    # The worker dies with this process, not with the template.
                    "env": {**env, PARENT_VARIABLE: str(os.getpid())},
                }
                # One small datagram: the socket's buffer takes it without blocking.
                socket.send_fds(self._sock, [json.dumps(message).encode()], [sock_fd, out_w, err_w])
            try:
                pid, exit_code = await asyncio.wait_for(asyncio.shield(waiting), FORK_ANSWER_S)
            except (asyncio.TimeoutError, asyncio.CancelledError) as e:
                self._waiting.pop(request_id, None)  # a late answer's worker finds no one
                if isinstance(e, asyncio.CancelledError):
                    raise
                raise TemplateStuck(
                    f"its template (pid {self.pid}{', stopped' * process_stopped(self.pid)}) "
                    f"did not fork a worker within {FORK_ANSWER_S:g} s"
                ) from None
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self.forks += 1
        stdout = await reader_for(out_r)
        stderr = await reader_for(err_r)
        return ForkedProcess(pid, stdout, stderr, exit_code)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            try:
                raw, host_pid = await receive(self._sock, _MESSAGE_MAX)
            except OSError:
                raw, host_pid = b"", None
            if not raw:
                break
            message = json.loads(raw)
            if message["op"] == "forked":
                # Exits are told by the template's pid (its namespace's); the worker is known
                # here by this namespace's, read from the pidfd that came with the message.
                pid = int(message["pid"])
                exit_code = self._exits[pid] = loop.create_future()
                waiting = self._waiting.pop(message["id"], None)
                if waiting is not None and not waiting.done():
                    if host_pid is None and self._in_pid_namespace:
                        waiting.set_exception(TemplateUnsafe("the forked worker's pid is unknown"))
                    else:
                        waiting.set_result((host_pid or pid, exit_code))
            elif message["op"] == "exited":
                code = self._exits.pop(int(message["pid"]), None)
                if code is not None and not code.done():
                    code.set_result(int(message["code"]))
            self._arm_idle()
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(TemplateUnsafe("the template died during a fork"))
        self._waiting.clear()
        logger.debug("openflash: template %s (%s) ended", self.pid, self.python)

    def memory(self) -> int | None:
        """The template's resident memory in bytes, or None when it is not running."""
        if not self.alive or self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.pid if self.alive else None,
            "python": str(self.python),
            "environment": self.python.parent.parent.name,
            "endpoint": self.env.get("OPENFLASH_ENDPOINT"),
            "preloaded": self.preloaded,
            "learned": self.learned_count,
            "failed": self.failed,
            "forks": self.forks,
            "rss": self.memory(),
        }

    def _note(self) -> Path | None:
        return self.registry / f"{self.pid}.json" if self.registry and self.pid else None

    def _register(self) -> None:
        note = self._note()
        if note is None:
            return
        with contextlib.suppress(OSError):
            check_levels(note.parent, note.parent.parent)  # in FLASH_HOME: its owner's only
            write_atomic(note, json.dumps({k: v for k, v in self.describe().items() if k != "rss"}))

    def _kill(self) -> None:
        note = self._note()
        if note is not None:
            with contextlib.suppress(OSError):
                note.unlink()
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, 9)
        if self._sock is not None:
            # Its reader's registration goes first: a socket closed while the loop watches its
            # number leaves the loop watching a number the kernel no longer has, and a new
            # template's socket, given that number next, would never be seen (its ready lost).
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    async def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._started is not None and not self._started.done():
            self._started.cancel()  # still starting: it must not outlive the loop
            await asyncio.gather(self._started, return_exceptions=True)
        self._kill()
        if self._proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._proc.wait(), 5)
        if self._reader is not None:
            self._reader.cancel()
        if self._drain is not None:
            self._drain.cancel()


async def _drain(stream: asyncio.StreamReader, keep: collections.deque[str]) -> None:
    """Read a template's output to its end (so that it never blocks), keeping its last lines."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line past asyncio's limit, dropped: read on
            continue
        except OSError:
            return
        if not line:
            return
        keep.append(line.decode(errors="replace").rstrip("\n"))
