"""The one helper that runs a command: an argv list (never a shell), output captured.

Parsing what a tool printed is left to pure functions next to their callers, so that they can be
tested on saved outputs. The tools it runs (uv, apt, compileall) write the store: they run with
umask 022, so that nothing they create is group- or world-writable.

Progress: inside ``with reporting(sink):`` every line a command prints (and every ``report``ed
line) also goes to ``sink`` as it comes, so that a build's log can be shown live without passing
a callback through every layer. Sinks nest: an inner one (a build's own log) does not hide the
outer one (a command's display).

Stopping: each command leads its own process group; ``stop_all`` (a Ctrl-C or SIGTERM of the
process, see runtime/stopping.py) kills every running command with what it started (uv's build
backends and their compilers), and their ``run`` raises instead of returning a failure. A process
that dies without that chance (SIGKILL) takes its commands along too: each is started through
util-linux's ``setpriv --pdeathsig KILL`` where it is installed (``PR_SET_PDEATHSIG``: the kernel
kills the command when the thread that started it ends, and ``run``'s thread waits for it), so
that an orphaned uv cannot go on writing into a ``tmp/`` folder the next start sweeps. Commands
meant to outlive their caller (``start_detached``: the background bytecode compiler) are not,
nor is ``apt-get install`` on the host (``die_with_caller=False``: dpkg stopped half-way would
leave the host's package database broken).

Credentials: a URL's user and password (``https://user:token@host``, as private index URLs hold)
are replaced by ``***`` in every line reported and in every command's stderr, whatever tool
printed them, so that they reach no log, dashboard or error (``redact``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from openflash.errors import FlashError

TAIL_LINES = 30
#: The umask of every command run here.
TOOL_UMASK = 0o022

_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@'\"`<>]+@")

#: The commands running now, by pid, and those ``stop_all`` killed.
_running: dict[int, subprocess.Popen[str]] = {}
_stopped: set[int] = set()
_stop_called = False
_lock = threading.Lock()

_sink: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "openflash_progress_sink", default=None
)


@contextlib.contextmanager
def reporting(sink: Callable[[str], None]) -> Iterator[None]:
    """Send the output of commands run in this context (this thread) to ``sink``, and still to
    the sink of an enclosing ``reporting``: a build keeps its own log while the command or
    terminal that started it shows the same lines."""
    outer = _sink.get()
    if outer is not None:
        inner = sink

        def sink(line: str) -> None:
            try:
                inner(line)
            finally:
                outer(line)

    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def redact(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(r"\1***@", text)


def report(line: str) -> None:
    """Send a line of progress to the current sink, if any (credentials in URLs redacted)."""
    sink = _sink.get()
    if sink is not None:
        with contextlib.suppress(Exception):
            sink(redact(line))


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of ``text``."""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    check: bool = True,
    error: type[FlashError] = FlashError,
    hint: str | None = None,
    on_line: Callable[[str], None] | None = None,
    die_with_caller: bool = True,
) -> Completed:
    """Run ``argv`` and capture its output.

    With ``check`` (the default) a non-zero exit raises ``error`` naming the command and quoting
    the tail of its stderr. A missing program, a timeout or a ``stop_all`` always raises
    ``error``. ``on_line`` receives each line the command prints (stdout or stderr) as it
    prints it. The command leads a process group of its own (``stop_all``), and dies with the
    calling thread (``die_with_caller``; off for what must never stop half-way, such as
    ``apt-get install`` on the host).
    """
    argv = tuple(str(a) for a in argv)
    shown = " ".join(argv[:3])
    on_line = on_line or _sink.get()
    try:
        proc = _started(argv, env=env, cwd=cwd, input=input, die_with_caller=die_with_caller)
    except FileNotFoundError as e:
        raise error(
            f"cannot run {argv[0]!r}: program not found",
            hint=hint or f"install {os.path.basename(argv[0])!r} or put it on PATH",
        ) from e
    try:
        if on_line is None:
            stdout, stderr = proc.communicate(input, timeout)
        else:
            stdout, stderr = _streamed(proc, timeout=timeout, input=input, on_line=on_line)
    except subprocess.TimeoutExpired as e:
        _kill(proc)
        raise error(
            f"`{shown}` did not finish within {timeout:g} s and was stopped",
            hint=hint or "check the network or the machine's load, then try again",
        ) from e
    finally:
        with _lock:
            _running.pop(proc.pid, None)
            stopped = proc.pid in _stopped
            _stopped.discard(proc.pid)
    if stopped:
        raise error(
            f"`{shown}` was stopped: this process is stopping",
            hint="nothing it was making was kept; run again to build it",
        )
    done = Completed(argv, proc.returncode, stdout, redact(stderr))
    if check and not done.ok:
        raise error(
            f"`{shown}` failed with exit code {proc.returncode}:\n{tail(redact(stderr or stdout))}",
            hint=hint or error.hint or "read the command's output above",
        )
    return done


def stop_all() -> int:
    """Kill every command running now, with the processes it started (uv's build backends,
    compilers, apt's methods: its process group). Each ``run`` raises its error saying that
    it was stopped. Returns how many were killed."""
    global _stop_called
    with _lock:
        _stop_called = True
        procs = list(_running.values())
        _stopped.update(p.pid for p in procs)
    for proc in procs:
        _kill(proc)
    return len(procs)


def stopping() -> bool:
    """Whether ``stop_all`` was called in this process (it is stopping)."""
    return _stop_called


def running() -> int:
    """How many commands run now."""
    with _lock:
        return len(_running)


@functools.cache
def _pdeathsig_prefix() -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL --`` where it works here (util-linux 2.33 and later), else
    nothing."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    prefix = (setpriv, "--pdeathsig", "KILL", "--")
    try:
        works = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        works = False
    return prefix if works else ()


def dies_with_caller(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> list[str]:
    """``argv`` started so that the kernel kills it when the calling thread ends (``setpriv
    --pdeathsig KILL``), where that works here. A missing program raises FileNotFoundError, as
    starting it directly would."""
    prefix = _pdeathsig_prefix()
    if not prefix:
        return list(argv)
    program = argv[0]
    if os.sep in program:
        found = os.access(os.path.join(cwd or "", program), os.X_OK)
    else:
        path = (env if env is not None else os.environ).get("PATH", os.defpath)
        found = shutil.which(program, path=path) is not None
    if not found:
        raise FileNotFoundError(2, "No such file or directory", program)
    return [*prefix, *argv]


def _started(
    argv: tuple[str, ...],
    *,
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
    input: str | None,
    die_with_caller: bool = True,
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        dies_with_caller(argv, env, cwd) if die_with_caller else argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        umask=TOOL_UMASK,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,  # its own process group: stop_all kills what it started too
    )
    with _lock:
        _running[proc.pid] = proc
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _streamed(
    proc: subprocess.Popen[str],
    *,
    timeout: float | None,
    input: str | None,
    on_line: Callable[[str], None],
) -> tuple[str, str]:
    """``proc.communicate`` that also hands every output line to ``on_line`` as it comes."""
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(name: str, stream: IO[str]) -> None:
        for line in stream:
            captured[name].append(line)
            with contextlib.suppress(Exception):  # a progress display must not break a build
                on_line(redact(line.rstrip("\n")))

    readers = [
        threading.Thread(target=pump, args=("stdout", proc.stdout), daemon=True),
        threading.Thread(target=pump, args=("stderr", proc.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    if input is not None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(input)
        proc.stdin.close()
    try:
        proc.wait(timeout)
    finally:
        for reader in readers:
            reader.join(5)
    return "".join(captured["stdout"]), "".join(captured["stderr"])


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the background, in a session of its own (one ``killpg`` stops it and
    what it starts), its output discarded, ``pass_fds`` inherited: a long-lived helper process
    (a Ray node's worker template). A missing program raises FlashError."""
    try:
        return subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
    except OSError as e:
        raise FlashError(
            f"cannot start {argv[0]!r}: {e}",
            hint="check that the program exists and that this user may run it",
        ) from e


def start_detached(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    error: type[FlashError] = FlashError,
) -> int:
    """Start ``argv`` in a session of its own, its output discarded, and return its pid without
    waiting: work that outlives the caller (the store's background bytecode)."""
    argv = tuple(str(a) for a in argv)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            umask=TOOL_UMASK,
        )
    except OSError as e:
        raise error(
            f"cannot start {argv[0]!r}: {e}",
            hint=f"check that {argv[0]!r} exists and can run",
        ) from e
    # Reaped by a thread, so that it leaves no zombie while the caller runs on.
    threading.Thread(target=proc.wait, name="openflash-detached", daemon=True).start()
    return proc.pid
