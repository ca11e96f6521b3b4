"""What the commands share: the console, loading a project, and showing progress.

Progress: on a terminal, a rich progress display with one line per task (an endpoint's
resolution, an environment's build) showing its current step (prepare/build_progress.py:
resolving, downloading, installing, a source build announced, compiling); elsewhere (CI),
plain lines: one when a task starts, one per step, one when it ends, and with ``-v`` every line
of output. ``-q`` prints only results and errors.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from dotenv import load_dotenv
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from openflash import _subprocess
from openflash.deps.project_lock import ProjectLock
from openflash.envs.uv_options import NO_OPTIONS, UvOptions
from openflash.prepare import DependencyKey, Preparer
from openflash.prepare.build_progress import quiet_from_env, step
from openflash.project import Project, discover
from openflash.runtime.definitions import EndpointDef

__all__ = [
    "Quiet",
    "Reporter",
    "Verbose",
    "console",
    "dependency_sets",
    "fail",
    "load_project",
]

console = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only results and errors.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Print every line tools print.")]


def fail(message: str, hint: str | None = None, code: int = 2) -> None:
    """Print a one-line error (and a hint) and exit."""
    console.print(f"[red]error:[/red] {message}" + (f"\n[dim]hint:[/dim] {hint}" if hint else ""))
    raise typer.Exit(code)


def load_project(path: Path, *, need_endpoints: bool = True) -> Project:
    """Discover the project at ``path`` as ``flash run`` does (working folder, .env)."""
    root = path.resolve()
    if not root.is_dir():
        fail(f"{path} is not a folder", "pass your project's folder, or run the command in it")
    os.chdir(root)
    load_dotenv(root / ".env", override=False)
    project = discover(root)
    for failure in project.failures:
        console.print(
            f"[yellow]warning:[/yellow] {failure.file.relative_to(root)} failed to "
            f"import; its endpoints are left out:\n{failure.traceback}"
        )
    if need_endpoints and not project.queue and not project.lb:
        fail(
            f"no endpoints found in {root}",
            "decorate functions with @Endpoint(...) or @remote(...), or run `flash init`",
        )
    return project


@dataclass
class DependencySet:
    """Endpoints that need the same Python and system dependencies. ``dependencies`` are what
    is installed: the declared ones plus ``base``, those that came from the GPU base set."""

    dependencies: tuple[str, ...]
    system_dependencies: tuple[str, ...]
    endpoints: list[EndpointDef] = field(default_factory=list)
    options: UvOptions = NO_OPTIONS
    base: tuple[str, ...] = ()
    #: The project's uv.lock, whose versions constrain the set (deps/project_lock.py).
    project_lock: ProjectLock | None = None

    @property
    def names(self) -> list[str]:
        return sorted({e.name for e in self.endpoints})

    @property
    def label(self) -> str:
        return ", ".join(self.names)

    @property
    def imports(self) -> dict[str, tuple[str, ...]]:
        """Each endpoint's top-level imports, less the project's own modules (a ``name.py`` or
        ``name/`` in its project's folder or its file's). ``e.imports`` is dotted
        (``nltk.tokenize``, for preloading); a distribution provides its top-level module."""
        found: dict[str, dict[str, None]] = {}
        for e in self.endpoints:
            roots = [r for r in (e.project, e.source_dir) if r is not None]
            own = found.setdefault(e.name, {})
            for module in dict.fromkeys(m.split(".")[0] for m in e.imports):
                if not any((r / f"{module}.py").is_file() or (r / module).is_dir() for r in roots):
                    own[module] = None
        return {name: tuple(modules) for name, modules in found.items()}


def endpoint_defs(project: Project) -> list[EndpointDef]:
    """One definition per (endpoint, dependency sets) of the project."""
    found: dict[tuple[str, DependencyKey], EndpointDef] = {}
    handles = [r.handle for r in project.queue] + [r.route.handle for r in project.lb]
    for handle in handles:
        e = handle.endpoint
        key = DependencyKey(e.dependencies, e.system_dependencies, options=e.options)
        found.setdefault((e.name, key), e)
    return list(found.values())


def dependency_sets(project: Project, preparer: Preparer) -> list[DependencySet]:
    """The project's sets as ``preparer`` keys them (GPU endpoints' base-set imports added)."""
    sets: dict[DependencyKey, DependencySet] = {}
    for handle in [r.handle for r in project.queue] + [r.route.handle for r in project.lb]:
        endpoint = handle.endpoint
        key = preparer.dependency_key(
            endpoint.dependencies,
            endpoint.system_dependencies,
            options=endpoint.options,
            gpu_imports=endpoint.gpu_imports,
            imports=endpoint.imports,
            gpu=endpoint.wants_gpu,
            project_lock=endpoint.uv_lock,
        )
        dep_set = sets.setdefault(
            key,
            DependencySet(
                key.python,
                key.system,
                options=key.options,
                base=key.base,
                project_lock=key.project_lock,
            ),
        )
        if endpoint.name not in dep_set.names:
            dep_set.endpoints.append(endpoint)
    return list(sets.values())


class Reporter:
    """Runs tasks in parallel threads and shows their progress."""

    def __init__(self, *, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet or quiet_from_env()
        self.verbose = verbose
        self.live = console.is_terminal and not self.quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            console.print(message)

    def run(
        self, tasks: list[tuple[str, Callable[[], T]]], *, parallel: int = 4
    ) -> list[T | BaseException]:
        """Run ``(label, fn)`` tasks; each result, or the exception it raised, in order."""
        results: list[T | BaseException] = [None] * len(tasks)  # type: ignore[list-item]
        with self._display() as (start, line, finish):
            semaphore = threading.Semaphore(parallel)

            def one(index: int, label: str, fn: Callable[[], T]) -> None:
                with semaphore:
                    start(index, label)
                    with _subprocess.reporting(lambda text: line(index, label, text)):
                        try:
                            results[index] = fn()
                            finish(index, label, None)
                        except BaseException as e:  # reported by the caller
                            results[index] = e
                            finish(index, label, e)

            threads = [
                threading.Thread(target=one, args=(i, label, fn), daemon=True)
                for i, (label, fn) in enumerate(tasks)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return results

    @contextlib.contextmanager
    def _display(
        self,
    ) -> Iterator[tuple[Callable[..., None], Callable[..., None], Callable[..., None]]]:
        if self.live:
            progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.fields[label]}"),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            ids: dict[int, TaskID] = {}
            lock = threading.Lock()

            def start(index: int, label: str) -> None:
                with lock:
                    ids[index] = progress.add_task("starting", label=label, total=None)

            def line(index: int, label: str, text: str) -> None:
                found = step(text)
                if index not in ids or found is None:
                    return
                if found.announce:
                    progress.console.print(f"{escape(label)}: {escape(found.text)}")
                progress.update(ids[index], description=escape(found.text[:80]))

            def finish(index: int, label: str, error: BaseException | None) -> None:
                status = "[green]done[/green]" if error is None else "[red]failed[/red]"
                progress.update(ids[index], description=status, total=1, completed=1)

            with progress:
                yield start, line, finish
            return
        started: dict[int, float] = {}

        def plain_start(index: int, label: str) -> None:
            started[index] = time.monotonic()
            if not self.quiet:
                console.print(f"{label}: started")

        last: dict[int, str] = {}

        def plain_line(index: int, label: str, text: str) -> None:
            found = step(text)
            if self.verbose and text.strip():
                console.print(f"{label}: {text}", markup=False)
            elif found is not None and not self.quiet and last.get(index) != found.text:
                last[index] = found.text
                console.print(f"{label}: {found.text}", markup=False)

        def plain_finish(index: int, label: str, error: BaseException | None) -> None:
            took = time.monotonic() - started.get(index, time.monotonic())
            if not self.quiet or error is not None:
                console.print(f"{label}: {'done' if error is None else 'failed'} ({took:.1f} s)")

        yield plain_start, plain_line, plain_finish
