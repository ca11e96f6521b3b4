"""A clean stop: Ctrl-C or SIGTERM while an environment builds or calls are in flight.

uv, apt and the compilers uv's build backends start run in process groups of their own
(_subprocess.py), so a stop kills them with their children instead of leaving them running
for a minute, and a killed build publishes nothing (the store publishes by rename, with a
marker, only what finished). Workers are stopped by the runtime's shutdown at exit.

``install`` (once per process, when ``python app.py``'s runtime starts; a server has its own
handling, server/app.py):

- SIGTERM: one line saying what was stopped, every command killed, then ``SystemExit(143)``
  (where SIGTERM still has its default action: a program's own handler is left alone);
- Ctrl-C: Python's KeyboardInterrupt, which the short-error hook (api/short_errors.py) prints as
  the same one line, not a traceback, when openflash had something running; the exit code
  stays Python's (130, by SIGINT). The ``flash`` commands (``sigint=True``: their framework
  turns KeyboardInterrupt into exit code 130 before any hook sees it) print that line from
  the signal handler instead, kill every command, then raise KeyboardInterrupt as Python would
  (where SIGINT still has Python's default handler);
- at interpreter exit, before Python waits for threads (a build's thread among them), every
  command still running is killed, so that exiting never waits for a build nobody awaits.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from openflash import _subprocess
from openflash.runtime.core import Runtime, _label

__all__ = ["in_progress", "install", "stop_line"]

_installed = False


def install(current: Callable[[], Runtime | None], *, sigint: bool = False) -> None:
    """Stop cleanly on SIGTERM and at exit, and on Ctrl-C with ``sigint`` (see the module's
    docstring); once per process. ``current`` is the process's runtime when the signal comes."""
    global _installed
    if _installed:
        return
    _installed = True
    # Run before concurrent.futures joins its threads at exit (registered later: runs first).
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_subprocess.stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            line = stop_line(current(), "SIGTERM")
            _subprocess.stop_all()
            if line:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_sigterm)
    if sigint and signal.getsignal(signal.SIGINT) is signal.default_int_handler:

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            line = stop_line(current(), "Ctrl-C")
            if line:
                _subprocess.stop_all()
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)


def in_progress(runtime: Runtime) -> tuple[list[str], int]:
    """The builds running now (their labels) and the calls in flight or queued."""
    builds = [_label(key) for key, future in list(runtime._prepared.items()) if not future.done()]
    calls = 0
    for pool in list(runtime._pools.values()):
        calls += len(pool.queue) + sum(len(w.in_flight) for w in list(pool.workers))
    return builds, calls


def stop_line(runtime: Runtime | None, why: str) -> str:
    """The one line that says what a stop interrupted ('' when nothing was running)."""
    builds, calls = in_progress(runtime) if runtime is not None else ([], 0)
    commands = _subprocess.running()
    parts = []
    if builds:
        parts.append(f"the build of {', '.join(builds)}")
    elif commands:
        parts.append(f"{commands} running command(s)")
    if calls:
        parts.append(f"{calls} call(s) in flight")
    if not parts:
        return ""
    kept = "; nothing partial was kept" if builds or commands else ""
    return f"openflash: {why}: stopped {' and '.join(parts)}{kept}"
