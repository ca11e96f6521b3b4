"""``flash check``: will every endpoint's dependencies install? Asked for the whole project.

It discovers the endpoints as ``flash run`` does, resolves every dependency set with uv (and apt,
for system dependencies) in parallel, and reports:

- errors (exit 1): sets that cannot be installed together, with uv's explanation; system
  packages apt does not know;
- warnings (``--strict`` makes them errors): unpinned specs; packages with no wheel for this
  platform, which would be compiled from source; a flash.lock out of date with the code;
- suggestions: endpoints whose sets differ in one package only, which could share one
  environment.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from openflash import _subprocess
from openflash._settings import Settings
from openflash.cli.common import Quiet, Reporter, Verbose, console, dependency_sets, load_project
from openflash.deps.apt import Apt
from openflash.deps.lockfile import LockFile, find_lockfile
from openflash.deps.resolve import resolve
from openflash.deps.system import resolve_system
from openflash.envs.store import Store
from openflash.envs.uv import uv_argv, uv_environ
from openflash.errors import FlashError

__all__ = ["Issue", "check", "run_checks"]

_NO_WHEELS = re.compile(r"Because (\S+?)==\S+ has no usable wheels")


@dataclass(frozen=True)
class Issue:
    level: str  # error, warning, suggestion
    kind: str
    endpoints: list[str]
    message: str


def check(
    path: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    strict: Annotated[bool, typer.Option(help="Treat warnings as errors.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Check that every endpoint's dependencies resolve, before anything runs.

    Example: flash check --strict
    """
    project = load_project(path)
    issues = run_checks(project, Reporter(quiet=quiet or as_json, verbose=verbose))
    failing = [i for i in issues if i.level == "error" or (strict and i.level == "warning")]
    if as_json:
        typer.echo(json.dumps({"ok": not failing, "issues": [asdict(i) for i in issues]}, indent=2))
    else:
        colours = {"error": "red", "warning": "yellow", "suggestion": "cyan"}
        for issue in issues:
            who = ", ".join(issue.endpoints)
            console.print(
                f"[{colours[issue.level]}]{issue.level}[/]: [bold]{who}[/bold]: {issue.message}"
            )
        if not issues and not quiet:
            console.print("[green]all endpoints resolve[/green]")
    raise typer.Exit(1 if failing else 0)


def run_checks(project: object, reporter: Reporter) -> list[Issue]:
    from openflash.project import Project

    assert isinstance(project, Project)
    settings = Settings.from_env()
    store = Store(settings.home)
    apt = Apt(settings.apt_root, settings.system_base, settings.resolve_ttl)
    sets = dependency_sets(project)
    issues: list[Issue] = []

    def check_set(index: int) -> list[Issue]:
        found: list[Issue] = []
        dep_set = sets[index]
        names = dep_set.names
        if dep_set.system_dependencies:
            resolve_system(
                dep_set.system_dependencies, store=store, apt=apt, ttl=settings.resolve_ttl
            )
        lock = resolve(
            dep_set.dependencies,
            store=store,
            uv_cache=settings.uv_cache_dir,
            ttl=settings.resolve_ttl,
        )
        for package in _without_wheels(lock.text, settings.uv_cache_dir):
            found.append(
                Issue(
                    "warning",
                    "no-wheel",
                    names,
                    f"{package} has no wheel for this platform and would be built "
                    "from source (slow, needs compilers); pin a release with wheels",
                )
            )
        return found

    results = reporter.run([(s.label, (lambda i=i: check_set(i))) for i, s in enumerate(sets)])
    for dep_set, result in zip(sets, results, strict=True):
        if isinstance(result, FlashError):
            kind = type(result).__name__
            issues.append(Issue("error", kind, dep_set.names, str(result)))
        elif isinstance(result, BaseException):
            raise result
        else:
            issues.extend(result)
        for spec in dep_set.dependencies:
            if not _pinned(spec):
                issues.append(
                    Issue(
                        "warning",
                        "unpinned",
                        dep_set.names,
                        f"{spec!r} is not pinned; pin it with '==' (or run `flash "
                        "lock`) so that builds are reproducible",
                    )
                )
    issues += _stale_lock(project.root, sets)
    issues += _near_duplicates(sets)
    order = {"error": 0, "warning": 1, "suggestion": 2}
    return sorted(issues, key=lambda i: (order[i.level], i.endpoints, i.kind))


def _pinned(spec: str) -> bool:
    req = Requirement(spec)
    return req.url is not None or any(
        s.operator in ("==", "===") and "*" not in s.version for s in req.specifier
    )


def _without_wheels(lock_text: str, uv_cache: Path) -> list[str]:
    """The locked packages that have no wheel for this interpreter and platform."""
    import sys

    pins = [line for line in lock_text.splitlines() if line.strip() and " @ " not in line]
    missing: list[str] = []
    while pins:
        argv = uv_argv(
            "pip",
            "compile",
            "-",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--python",
            sys.executable,
            "--no-header",
            "--quiet",
            cache_dir=uv_cache,
        )
        done = _subprocess.run(
            argv, input="\n".join(pins) + "\n", env=uv_environ(), timeout=300, check=False
        )
        match = _NO_WHEELS.search(done.stderr)
        if done.ok or not match:
            break
        name = canonicalize_name(match[1])
        missing.append(name)
        pins = [p for p in pins if canonicalize_name(p.split("==")[0]) != name]
    return missing


def _stale_lock(root: Path, sets: list) -> list[Issue]:
    path = find_lockfile(root)
    if path is None:
        return []
    lockfile = LockFile.read(path)
    issues = []
    for dep_set in sets:
        if lockfile.find(dep_set.dependencies, dep_set.system_dependencies) is not None:
            continue
        for name in dep_set.names:
            stale = lockfile.stale(name, dep_set.dependencies, dep_set.system_dependencies)
            message = (
                f"flash.lock locks {list(stale.dependencies)}, the code now asks for "
                f"{list(dep_set.dependencies)}"
                if stale is not None
                else "is not in flash.lock"
            )
            issues.append(
                Issue(
                    "warning", "stale-lock", [name], f"{message}; run `flash lock` to lock it again"
                )
            )
    return issues


def _near_duplicates(sets: list) -> list[Issue]:
    """Pairs of sets that differ in exactly one package."""
    issues = []

    def by_name(specs: tuple[str, ...]) -> dict[str, str]:
        return {canonicalize_name(Requirement(s).name): s for s in specs}

    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            if a.system_dependencies != b.system_dependencies:
                continue
            da, db = by_name(a.dependencies), by_name(b.dependencies)
            differing = sorted(n for n in set(da) | set(db) if da.get(n) != db.get(n))
            shared = set(da) & set(db) - set(differing)
            if len(differing) == 1 and shared:
                issues.append(
                    Issue(
                        "suggestion",
                        "near-duplicate",
                        a.names + b.names,
                        f"{a.label!r} and {b.label!r} differ only in {differing[0]}: "
                        "share one environment?",
                    )
                )
    return issues
