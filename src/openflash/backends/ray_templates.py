"""Worker templates on a Ray node: the local backend's templates (templates.py), shared by every
worker actor on the node.

Each worker of a Ray endpoint is an actor of its own (ray_worker.py), so a template cannot live in
an actor: the node's agent (ray_agent.py) owns them. ``NodeTemplates`` starts one template per
``TemplateKey`` (its hash) with ``workers/forkserver.py``, giving it a listening socket bound at
``<tmp>/openflash-templates-<uid>/<hash>.sock`` (a folder of this user only: only its processes
can ask for a fork). A worker actor reaches it with ``AttachedTemplate``, sends its socket and
output pipes over that connection (SCM_RIGHTS), and gets back the forked worker's pid, then its
exit status. As locally, the endpoint's first worker on a node is spawned while the template
starts, and later ones fork (also a later driver's: templates outlive drivers, until their
environment is removed or the agent ends); a template that cannot fork (threads started by
its imports) says so once, and the node's workers are spawned. The template's control socket
is the agent's: when the agent ends, so do its templates (their workers run on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from openflash import _subprocess
from openflash.backends.templates import READY_TIMEOUT_S, Template, TemplateKey
from openflash.backends.worker_view import worker_main
from openflash.workers.forkserver import LISTEN_VARIABLE, PRELOAD_VARIABLE
from openflash.workers.lifeline import PARENT_VARIABLE
from openflash.workers.namespace import NAMESPACE_VARIABLE, lingering

__all__ = ["AttachedTemplate", "NodeTemplates", "TemplateRequest", "socket_folder"]


def socket_folder() -> Path:
    """Where this user's templates listen (short: a Unix socket path has at most 107 bytes)."""
    return Path(tempfile.gettempdir()) / f"openflash-templates-{os.getuid()}"


@dataclass(frozen=True, slots=True)
class TemplateRequest:
    """What a worker actor asks its node's agent for: the template of ``key``."""

    key: TemplateKey
    #: Where the template runs (a folder of the node).
    cwd: Path

    @property
    def digest(self) -> str:
        return _digest(self.key)

    @property
    def family(self) -> str:
        return _digest(self.key.family)


def _digest(key: TemplateKey) -> str:
    return hashlib.sha256(repr(key).encode()).hexdigest()[:24]


@dataclass
class _Running:
    family: str
    path: str
    ready: threading.Event = field(default_factory=threading.Event)
    proc: Popen[bytes] | None = None
    control: socket.socket | None = None
    #: Why it does not fork ("" while it does).
    unsafe: str = ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.control is not None:
            self.control.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class NodeTemplates:
    """The templates of one node (its agent's), by key."""

    def __init__(self) -> None:
        self._running: dict[str, _Running] = {}
        self._guard = threading.Lock()

    def socket_for(self, request: TemplateRequest) -> tuple[str | None, str]:
        """The socket of ``request``'s template once it is ready, and "" (None and why not:
        it is starting, for this worker, or it cannot fork). Blocks while another worker's
        request started it and it is not ready yet."""
        with self._guard:
            running = self._running.get(request.digest)
            if running is not None and not request.key.python.exists():
                # Its environment was removed (``flash env rm`` on the node): it forks no more.
                self._running.pop(request.digest).stop()
                running = None
            if running is None or (running.ready.is_set() and not running.alive):
                for digest, old in list(self._running.items()):  # an older project's template
                    if old.family == request.family and digest != request.digest:
                        self._running.pop(digest).stop()
                path = str(socket_folder() / f"{request.digest}.sock")
                running = self._running[request.digest] = _Running(request.family, path)
                threading.Thread(target=self._start, args=(running, request), daemon=True).start()
                return None, "the template is starting"
        running.ready.wait(READY_TIMEOUT_S)
        if running.unsafe or not running.alive:
            return None, running.unsafe or "the template ended"
        return running.path, ""

    def _start(self, running: _Running, request: TemplateRequest) -> None:
        key = request.key
        listener = ours = theirs = None
        try:
            folder = socket_folder()
            folder.mkdir(mode=0o700, exist_ok=True)
            st = folder.stat()
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
                raise OSError(f"{folder} is not this user's alone")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(running.path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            listener.bind(running.path)
            listener.listen(64)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            env = dict(key.environ)
            env[PRELOAD_VARIABLE] = json.dumps(list(key.preload))
            env[LISTEN_VARIABLE] = str(listener.fileno())
            env[PARENT_VARIABLE] = str(os.getpid())  # it dies with this agent
            main = worker_main(env, ["openflash.workers.forkserver", str(theirs.fileno())])
            if NAMESPACE_VARIABLE in env:  # its forks share the namespace it starts in
                main = ["openflash.workers.namespace", *main]
                # and it stays until they have ended, as they outlive the template outside one
                env[NAMESPACE_VARIABLE] = lingering(env[NAMESPACE_VARIABLE])
            running.proc = _subprocess.start(
                [str(key.python), "-m", *main],
                env=env,
                cwd=request.cwd,
                pass_fds=(theirs.fileno(), listener.fileno()),
            )
            theirs.close()
            listener.close()
            ours.settimeout(READY_TIMEOUT_S)
            raw = ours.recv(1 << 20)
            ready = json.loads(raw) if raw else {"unsafe": "it exited before it was ready"}
            running.unsafe = str(ready.get("unsafe") or "")
            running.control = ours
        except Exception as e:  # whatever it is, this node's workers are spawned
            running.unsafe = f"the template could not start: {e}"
            for sock in (listener, ours, theirs):
                if sock is not None:
                    sock.close()
        finally:
            if running.unsafe:
                running.stop()
            running.ready.set()

    def close(self) -> None:
        with self._guard:
            running, self._running = list(self._running.values()), {}
        for one in running:
            one.stop()


class AttachedTemplate(Template):
    """A template another process started (its node's agent), reached at its socket ``path``:
    ``fork`` as with one this process started (templates.py)."""

    def __init__(self, path: str) -> None:
        super().__init__(Path(path), {}, Path(path).parent, ())
        self.path = path

    @property
    def alive(self) -> bool:
        return self._sock is not None and (self._reader is None or not self._reader.done())

    async def _start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, self.path)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._reader = asyncio.ensure_future(self._read())
