"""What a build is doing, shown while it happens.

``step`` (pure) reads one line a build reports (openflash's own ``_subprocess.report`` lines and
what uv prints) and returns the step it marks: resolving, downloading (a file and its size:
uv names only its larger downloads, with their size), how many packages uv downloaded or built
(its ``Prepared N packages`` summary; with the total size of the files it named, when it named
some), installing, a package built from source, compiling bytecode, extracting a system layer;
or None for detail (a lock's pins, uv's offline attempt, its progress counters). A package about
to be built from source is announced (``building X from source ..., this can take minutes``).

``BuildProgress`` shows the steps of the builds a process runs (``python app.py``'s first
calls): on a terminal, a rich progress line per build (spinner, bar, step, time); elsewhere (a
pipe, CI logs, notebooks) one plain line per step, ``openflash: <label>: <step>``. A build with
nothing to do (its environment exists) shows nothing. A build shown then shows ``starting a
worker`` until its first call reaches a worker (``until_started``); only then is it ``ready in``
(the time counts both). FLASH_QUIET=1 silences it. ``flash run``
logs the same steps as ``build_step`` events instead (``step_sink``), and the ``flash`` commands
show them in their own display (cli/common.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from openflash import _subprocess
from openflash._settings import quiet
from openflash.workers import events

__all__ = ["STARTING", "BuildProgress", "Step", "quiet_from_env", "step", "step_sink"]

T = TypeVar("T")
#: The step a first call shows between its environment's build and its worker taking the call.
STARTING = "starting a worker"

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 1000**2}


@dataclass(frozen=True)
class Step:
    """A step of a build: ``text`` to show; ``size`` bytes for a download; ``count`` packages
    for uv's summary of what it fetched; ``announce`` for what must be said even where steps
    are shown in place (a source build)."""

    text: str
    size: int = 0
    announce: bool = False
    #: How many packages uv fetched (downloaded, or built from a source it downloaded).
    count: int = 0


_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Step]]] = [
    (re.compile(r"^resolving with uv\b"), lambda m: Step("resolving with uv")),
    (
        re.compile(r"^system dependencies: (.+)$"),
        lambda m: Step(f"resolving system packages: {m[1]}"),
    ),
    (
        re.compile(r"^installing the versions locked in "),
        lambda m: Step("installing the versions locked in flash.lock"),
    ),
    (
        re.compile(r"^building environment \S+ \(([1-9]\d*) packages?\)$"),
        lambda m: Step(f"installing {m[1]} package{'s' if m[1] != '1' else ''}"),
    ),
    (
        re.compile(
            r"^warning: (\S+) has no wheel for this platform and would be built from source"
        ),
        lambda m: Step(
            f"building {m[1]} from source (it has no wheel for this platform), "
            "this can take minutes",
            announce=True,
        ),
    ),
    (
        re.compile(r"^\s*Downloading (\S+) \(([\d.]+)\s*([KMG]i?B|kB|MB|B)\)"),
        lambda m: Step(
            f"downloading {m[1]} ({m[2]} {m[3]})", size=int(float(m[2]) * _UNITS.get(m[3], 1))
        ),
    ),
    (
        re.compile(r"^Prepared (\d+) packages? in "),
        lambda m: Step(
            f"downloaded or built {m[1]} package{'s' if m[1] != '1' else ''}", count=int(m[1])
        ),
    ),
    (re.compile(r"^\s*Building (\S+)$"), lambda m: Step(f"building {m[1]}")),
    (re.compile(r"^\s*Built (\S+)$"), lambda m: Step(f"built {m[1]}")),
    (
        re.compile(r"^Installed (\d+) packages?"),
        lambda m: Step(f"installed {m[1]} package{'s' if m[1] != '1' else ''}"),
    ),
    (re.compile(r"^compiling bytecode"), lambda m: Step("compiling bytecode")),
    (
        re.compile(r"^unpacking (\d+) packages for layer"),
        lambda m: Step(f"extracting {m[1]} system packages into a layer"),
    ),
]


def step(line: str) -> Step | None:
    """The step ``line`` marks, or None for a line of detail."""
    for pattern, make in _RULES:
        found = pattern.search(line)
        if found:
            return make(found)
    return None


def quiet_from_env() -> bool:
    """FLASH_QUIET=1: no progress (any yes/no word; ConfigError naming another value)."""
    return quiet()


def step_sink(what: str) -> Callable[[str], None]:
    """A report sink that emits each step of the build of ``what`` as a ``build_step`` event
    (``flash run`` logs them; workers/events.py)."""

    def sink(line: str) -> None:
        found = step(line)
        if found is not None:
            events.emit("build_step", what=what, step=found.text, announce=found.announce)

    return sink


@dataclass
class _Build:
    label: str
    started: float = field(default_factory=time.monotonic)
    last: str = ""
    shown: bool = False
    downloads: int = 0
    downloaded: int = 0
    task: Any = None


class BuildProgress:
    """Shows this process's builds on ``stream`` (stderr): live on a terminal, plain lines
    elsewhere, nothing when ``quiet`` (by default FLASH_QUIET)."""

    def __init__(
        self, stream: TextIO | None = None, *, live: bool | None = None, quiet: bool | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet_from_env() if quiet is None else quiet
        self.live = _is_terminal(self.stream) if live is None else live
        self._lock = threading.Lock()
        self._progress: Any = None
        self._active = 0
        #: Builds done whose first call waits for a worker, by label.
        self._starting: dict[str, _Build] = {}

    @contextlib.contextmanager
    def showing(self, label: str) -> Iterator[None]:
        """Show the steps reported in this block (this thread) as the build of ``label``."""
        if self.quiet:
            yield
            return
        build = _Build(label)
        with _subprocess.reporting(lambda line: self._line(build, line)):
            try:
                yield
            except BaseException:
                self._end(build, ok=False)
                raise
        if build.shown:  # its first call now waits for a worker (``until_started``)
            self._line(build, STARTING)
            with self._lock:
                self._starting[label] = build

    async def until_started(self, label: str, reply: Awaitable[T]) -> T:
        """Await ``reply`` (a call's), ending the build of ``label`` shown, if it waits for its
        worker (``STARTING``), once the call reaches a worker: ``ready in``, or ``failed``."""
        with self._lock:
            build = self._starting.pop(label, None)
        if build is None:
            return await reply
        previous = events.call_taken.get()
        ended: list[bool] = []

        def started() -> None:
            if previous is not None:
                previous()
            if not ended:
                ended.append(True)
                self._end(build, ok=True)

        token = events.call_taken.set(started)
        try:
            return await reply
        except BaseException:
            if not ended:
                ended.append(False)
                self._end(build, ok=False)
            raise
        finally:
            events.call_taken.reset(token)

    def close(self) -> None:
        """End what still waits for a worker (a build no call followed)."""
        with self._lock:
            left, self._starting = list(self._starting.values()), {}
        for build in left:
            self._end(build, ok=True)

    def _line(self, build: _Build, line: str) -> None:
        found = Step(STARTING) if line == STARTING else step(line)
        if found is None or found.text == build.last:
            return
        build.last = found.text
        text = found.text
        if found.size:
            build.downloads += 1
            build.downloaded += found.size
            text += f"; {build.downloads} file(s), {_mib(build.downloaded)} so far"
        elif found.count and build.downloads:
            text += f" ({_mib(build.downloaded)} in {build.downloads} large file(s)"
            text += "; uv gives no size for smaller ones)"
        with self._lock:
            build.shown = True
            if not self.live:
                self._write(f"openflash: {build.label}: {text}")
            else:
                self._show(build, text, found.announce)

    def _show(self, build: _Build, text: str, announce: bool) -> None:
        from rich.markup import escape

        progress = self._live()
        if build.task is None:
            self._active += 1
            build.task = progress.add_task(text, label=escape(build.label), total=None)
        if announce:
            progress.console.print(f"openflash: {escape(build.label)}: {escape(text)}")
        progress.update(build.task, description=escape(text), refresh=True)  # every step drawn

    def _live(self) -> Any:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.fields[label]}"),
                BarColumn(bar_width=20),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream, force_terminal=True, highlight=False),
                transient=False,
            )
            self._progress.start()
        return self._progress

    def _end(self, build: _Build, *, ok: bool) -> None:
        if not build.shown:
            return
        took = time.monotonic() - build.started
        stopped = not ok and _subprocess.stopping()  # a stop says so in a line of its own
        text = f"ready in {took:.1f} s" if ok else f"failed after {took:.1f} s"
        with self._lock:
            if not self.live:
                if not stopped:
                    self._write(f"openflash: {build.label}: {text}")
                return
            progress = self._live()
            progress.update(build.task, description="stopped" if stopped else text, total=1)
            progress.update(build.task, completed=1)
            self._active -= 1
            if self._active == 0:
                progress.stop()
                self._progress = None

    def _write(self, line: str) -> None:
        with contextlib.suppress(Exception):  # a closed stream must not break a build
            self.stream.write(line + "\n")
            self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"
