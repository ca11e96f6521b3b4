"""A template: ``python -m openflash.workers.forkserver FD``, forking workers with imports done.

It runs in an endpoint's environment like a worker (the runtime behind site-packages), imports the
modules in ``OPENFLASH_PRELOAD`` (a JSON list), checks that forking is still safe, then imports
those in ``OPENFLASH_PRELOAD_LEARNED`` (what the endpoint's workers were seen importing, in that
order; one already imported by an earlier one is not imported again) and checks again, and
answers on the SOCK_SEQPACKET socket FD:

- first ``{"op": "ready", "pid", "preloaded", "failed", "learned", "unsafe", "unsafe_learned"}``
  (with a pidfd of itself, as ``forked`` below);
  ``preloaded`` lists what it imported by name, ``learned`` how many learned modules it holds;
  ``unsafe`` says why forking would not be safe (threads running after the imports, CUDA
  initialised), and the template then exits: the pool spawns workers instead, or, when only the
  learned imports made it unsafe (``unsafe_learned``), starts a template without them;
- to ``{"op": "fork", "id", "max_concurrency", "env"}`` with three descriptors (the worker's socket,
  its stdout and its stderr), ``{"op": "forked", "id", "pid"}``: the child starts a session of
  its own, takes those descriptors and that environment, and serves as ``workers.child`` does,
  with a fresh event loop; a pidfd of the child comes with the message, since in a PID
  namespace (workers/namespace.py) ``pid`` is the namespace's, not the pool's;
- ``{"op": "exited", "pid", "code"}`` when a child ends (``code`` as subprocess reports it:
  negative for a signal).

It exits when the pool closes the socket, and dies when the process that started it dies
(``workers.lifeline``: the template leads its own session; each forked worker leads its own
and dies with the pool that asked for it, with what its calls started). With
``OPENFLASH_FORK_LISTEN`` (the descriptor of a listening SOCK_SEQPACKET socket its starter bound,
a Ray node's agent: backends/ray_templates.py), it also accepts connections there and answers
``fork`` on each the same way, telling each child's exit to the connection that asked for it;
those connections come and go. Only the standard library is imported here.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    from openflash.workers.child import _isolate_path

    _isolate_path()

import contextlib
import importlib
import json
import select
import signal
import socket
import threading
from typing import Any

from openflash.workers import child, lifeline

PRELOAD_VARIABLE = "OPENFLASH_PRELOAD"
LISTEN_VARIABLE = "OPENFLASH_FORK_LISTEN"
LEARNED_VARIABLE = "OPENFLASH_PRELOAD_LEARNED"
_MESSAGE_MAX = 1 << 20


def _send(sock: socket.socket, message: dict[str, object], pid: int | None = None) -> None:
    """``message``, with a pidfd of ``pid`` where one can be opened: in a PID namespace the
    pid in the message is the namespace's, and the receiver reads its own from the pidfd."""
    data = json.dumps(message).encode()
    try:
        pidfd = os.pidfd_open(pid) if pid is not None else None
    except (OSError, AttributeError):  # gone already, or no pidfds here
        pidfd = None
    if pidfd is None:
        sock.send(data)
        return
    try:
        socket.send_fds(sock, [data], [pidfd])
    finally:
        os.close(pidfd)


def _preload(names: list[str], skip_loaded: bool = False) -> tuple[list[str], dict[str, str]]:
    done, failed = [], {}
    for name in names:
        if skip_loaded and name in sys.modules:
            continue  # imported by an earlier one
        try:
            importlib.import_module(name)
            done.append(name)
        except BaseException as e:  # a module that cannot import here is the worker's problem
            failed[name] = f"{type(e).__name__}: {e}"
    return done, failed


def unsafe_reason() -> str | None:
    """Why forking this process would not be safe, or None."""
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        return f"threads were started by the imports ({', '.join(threads[:5])})"
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is not None and cuda.is_initialized():
            return "CUDA was initialised by the imports"
    except Exception:  # an odd torch: not our concern here
        pass
    return None


def _become_worker(
    request: dict[str, Any], fds: list[int], controls: list[socket.socket], wakeup: int
) -> None:
    """In the forked child: a session of its own, its descriptors, its environment; then serve,
    dying with the pool that asked for it (``workers.lifeline``), not with the template."""
    try:
        os.setsid()
        for control in controls:
            control.close()
        signal.set_wakeup_fd(-1)
        os.close(wakeup)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock_fd, out_fd, err_fd = fds
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        os.environ.clear()
        os.environ.update(request["env"])
        # The same argv as a spawned worker's (`-m openflash.workers.child FD N`).
        sys.argv[:] = [child.__file__, str(sock_fd), str(request["max_concurrency"])]
        # Its guardian is the pool that asked (its variable), else the template's own.
        named = str(request["env"].get(lifeline.PARENT_VARIABLE, ""))
        guardian = int(named) if named.isdigit() else lifeline.guardian()
        child.main(sys.argv, guardian=guardian, death_signal=False)
    finally:
        os._exit(70)  # child.main exits itself; this is only reached if it could not start


def serve(fd: int) -> None:
    # It dies with its pool (no watchdog thread: forking is safe only without threads); its
    # forked workers die with the pool that asked for them, each by its own lifeline.
    lifeline.arm(watch=False)
    control = socket.socket(fileno=fd)
    names = json.loads(os.environ.pop(PRELOAD_VARIABLE, "[]"))
    learned = json.loads(os.environ.pop(LEARNED_VARIABLE, "[]"))
    preloaded, failed = _preload(names)
    unsafe = unsafe_reason()
    if not unsafe and learned:
        more, _ = _preload(learned, skip_loaded=True)  # one failing is only not preloaded
        preloaded += more
        unsafe = unsafe_reason()
        unsafe_learned = bool(unsafe)
    else:
        unsafe_learned = False
    _send(
        control,
        {
            "op": "ready",
            "pid": os.getpid(),
            "preloaded": preloaded,
            "failed": failed,
            "learned": sum(1 for name in learned if name in sys.modules),
            "unsafe": unsafe,
            "unsafe_learned": unsafe_learned,
        },
        os.getpid(),
    )
    if unsafe:
        return
    listen = os.environ.pop(LISTEN_VARIABLE, "")
    listener = socket.socket(fileno=int(listen)) if listen else None
    clients: list[socket.socket] = []
    #: Which connection asked for each child (its exit is told there).
    askers: dict[int, socket.socket] = {}
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    while True:
        waiting: list[socket.socket | int] = [control, read_end, *clients]
        if listener is not None:
            waiting.append(listener)
        readable, _, _ = select.select(waiting, [], [])
        if read_end in readable:
            os.read(read_end, 4096)
            _reap(control, askers)
        if listener is not None and listener in readable:
            clients.append(listener.accept()[0])
        for asker in [control, *clients]:
            if asker not in readable:
                continue
            try:
                message, fds, _, _ = socket.recv_fds(asker, _MESSAGE_MAX, 3)
            except OSError:
                message, fds = b"", []
            if not message:
                if asker is control:
                    return  # the pool (or the node's agent) is gone
                clients.remove(asker)
                asker.close()
                continue
            request = json.loads(message)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                others = [control, *clients] + ([listener] if listener is not None else [])
                _become_worker(request, fds, others, read_end)
            for descriptor in fds:
                os.close(descriptor)
            askers[pid] = asker
            with contextlib.suppress(OSError):  # it left meanwhile: its child's exit goes nowhere
                _send(asker, {"op": "forked", "id": request["id"], "pid": pid}, pid)


def _reap(control: socket.socket, askers: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        with contextlib.suppress(OSError):  # the connection that asked has gone
            _send(askers.pop(pid, control), {"op": "exited", "pid": pid, "code": code})


if __name__ == "__main__":
    serve(int(sys.argv[1]))
