"""Find a project's endpoints: import its .py files that decorate something, collect the results.

Files are those under the project root that neither .gitignore nor .flashignore exclude, outside
virtual environments, hidden folders, ``.flash/`` and caches. Each is imported under its dotted
path from the root (``workers/gpu/endpoint.py`` is ``workers.gpu.endpoint``), with the root on
``sys.path`` so that project modules import each other as they do under ``python file.py``. Only
files whose source decorates something are imported (``api/decorated.py`` reads them first); the
others are listed as skipped, their module-level code never run. A file that fails to import is
reported with its traceback; the others are still served.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from openflash.api.decorated import decorates_something
from openflash.api.endpoint import Endpoint, Route
from openflash.api.remote import RemoteClass, RemoteFunction
from openflash.api.short_errors import short_report
from openflash.errors import FlashError

__all__ = ["ImportFailure", "LBRoute", "Project", "QueueRoute", "discover", "project_files"]

SKIPPED_DIRS = frozenset(
    {"__pycache__", "node_modules", "site-packages", "venv", "env", "build", "dist", "tests"}
)


@dataclass(frozen=True)
class QueueRoute:
    """A queue-style endpoint function (or a method of an endpoint class) and its URL base."""

    path: str
    module: str
    file: Path
    name: str
    handle: RemoteFunction | RemoteClass
    #: For a class endpoint: the method this route calls.
    method: str | None = None
    #: Runpod's URL when it differs from ``path``: ``/{file}`` for a file's only callable,
    #: ``/{file}/{method}`` for a class method among several (functions and methods counted
    #: together).
    short_path: str | None = None

    @property
    def endpoint_name(self) -> str:
        return self.handle.endpoint.name


@dataclass(frozen=True)
class LBRoute:
    """A handler of a load-balanced endpoint: ``method`` at ``path``."""

    method: str
    path: str
    module: str
    file: Path
    route: Route

    @property
    def endpoint_name(self) -> str:
        return self.route.handle.endpoint.name


@dataclass(frozen=True)
class ImportFailure:
    file: Path
    module: str
    traceback: str


@dataclass
class Project:
    root: Path
    queue: list[QueueRoute] = field(default_factory=list)
    lb: list[LBRoute] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)
    modules: dict[Path, str] = field(default_factory=dict)
    #: Files not imported: nothing in them is decorated as an endpoint.
    skipped: list[Path] = field(default_factory=list)


def project_files(root: Path) -> list[Path]:
    """The project's Python files, sorted, honouring .gitignore and .flashignore."""
    patterns: list[str] = []
    for name in (".gitignore", ".flashignore"):
        ignore = root / name
        if ignore.is_file():
            patterns += ignore.read_text(errors="replace").splitlines()
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    found = []
    for path in _walk(root):
        relative = path.relative_to(root).as_posix()
        if not spec.match_file(relative):
            found.append(path)
    return sorted(found)


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in SKIPPED_DIRS
            and not (here / d / "pyvenv.cfg").exists()
        )
        for name in filenames:
            if name.endswith(".py") and not name.startswith("."):
                yield here / name


def module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_file(root: Path, file: Path, *, fresh: bool = False) -> types.ModuleType:
    """Import ``file`` as its dotted module name (``fresh``: execute it again)."""
    name = module_name(root, file)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    loaded = sys.modules.get(name)
    if loaded is not None and (fresh or getattr(loaded, "__file__", None) != str(file)):
        sys.modules.pop(name, None)  # re-run it, or it is another file of the same name
    if all(part.isidentifier() for part in name.split(".")):
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def discover(root: Path, files: list[Path] | None = None, *, fresh: bool = False) -> Project:
    """Import the project's files (those that decorate something) and collect its routes.

    ``files``, when given, are imported whatever they hold.
    """
    root = root.resolve()
    project = Project(root)
    if files is None:
        files = []
        for file in project_files(root):
            (files if decorates_something(file) else project.skipped).append(file)
    for file in files:
        name = module_name(root, file)
        try:
            module = import_file(root, file, fresh=fresh)
        except BaseException as e:  # a broken file must not stop the others
            if isinstance(e, KeyboardInterrupt):
                raise
            short = short_report(e, e.__traceback__) if isinstance(e, FlashError) else None
            text = short or "".join(traceback.format_exception(type(e), e, e.__traceback__))
            project.failures.append(ImportFailure(file, name, text))
            continue
        project.modules[file] = name
        _collect(project, module, file)
    return project


def _collect(project: Project, module: types.ModuleType, file: Path) -> None:
    base = "/" + module_name(project.root, file).replace(".", "/")
    callables: list[QueueRoute] = []  # functions and class methods, counted together as Runpod does
    for attr, value in vars(module).items():
        route = getattr(value, "__flash_route__", None)  # remote(LiveLoadBalancer(), path=...)
        if isinstance(route, Route) and getattr(value, "__module__", None) == module.__name__:
            project.lb.append(
                LBRoute(route.method, base + route.path, module.__name__, file, route)
            )
        elif isinstance(value, (RemoteFunction, RemoteClass)):
            if getattr(value, "__is_lb_route_handler__", False):
                continue  # a route's handler: served at its route
            if getattr(value, "__module__", None) != module.__name__:
                continue  # imported from another module: served there
            if isinstance(value, RemoteFunction):
                callables.append(QueueRoute(f"{base}/{attr}", module.__name__, file, attr, value))
            else:
                for method in _public_methods(value):
                    path = f"{base}/{attr}/{method}"
                    callables.append(
                        QueueRoute(path, module.__name__, file, attr, value, method=method)
                    )
        elif isinstance(value, Endpoint) and value.routes:
            for route in value.routes:
                if getattr(route.function, "__module__", None) != module.__name__:
                    continue
                project.lb.append(
                    LBRoute(route.method, base + route.path, module.__name__, file, route)
                )
    taken = {lb.path for lb in project.lb if lb.module == module.__name__}
    project.queue.extend(_runpod_paths(base, callables, taken))


def _runpod_paths(base: str, callables: list[QueueRoute], lb_paths: set[str]) -> list[QueueRoute]:
    """Give each callable Runpod's URL too: ``{file}`` when it is the file's only one, else
    ``{file}/{function}`` (its own path) or ``{file}/{method}`` (no class segment)."""
    if len(callables) == 1:
        if _short_form_taken(base, lb_paths):
            return callables
        return [dataclasses.replace(callables[0], short_path=base)]
    used = {route.path for route in callables}
    named: list[QueueRoute] = []
    for route in callables:
        alias = f"{base}/{route.method}" if route.method else None
        if alias is not None and alias not in used and not _short_form_taken(alias, lb_paths):
            used.add(alias)  # the first class with that method name keeps the short URL
            route = dataclasses.replace(route, short_path=alias)
        named.append(route)
    return named


def _short_form_taken(base: str, lb_paths: set[str]) -> bool:
    """Whether a route of the file's load-balanced endpoint uses a path of the short form."""
    return any(
        path in (f"{base}/run", f"{base}/runsync")
        or path.startswith((f"{base}/status/", f"{base}/cancel/"))
        for path in lb_paths
    )


def _public_methods(cls: RemoteClass) -> list[str]:
    target = cls.__wrapped__
    return [
        name
        for name, value in inspect.getmembers(target)
        if not name.startswith("_") and callable(value)
    ]
