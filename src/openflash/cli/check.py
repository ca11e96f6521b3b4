"""``flash check``: will every endpoint's dependencies install? Asked for the whole project.

It discovers the endpoints as ``flash run`` does, has the preparer resolve every dependency set
(uv, and apt for system dependencies) in parallel, and reports (prepare/dependency_checks.py):

- errors (exit 1): sets that cannot be installed together, with uv's explanation; system
  packages apt does not know;
- warnings (``--strict`` makes them errors): unpinned specs; packages with no wheel for this
  platform, which would be compiled from source; yanked releases; a flash.lock out of date with
  the code;
- suggestions: endpoints whose sets differ in one package only, which could share one
  environment;
- information: the torch build each set installs (cpu, cu121, ...) and its download size.

``--refresh`` forgets the source builds remembered as failed (envs/build_failures.py), so that
the next call builds them again.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from openflash.cli.common import Quiet, Reporter, Verbose, console, dependency_sets, load_project
from openflash.deps.lockfile import find_lockfile
from openflash.deps.namespace_mode import layer_mode
from openflash.prepare import Preparer
from openflash.prepare.dependency_checks import Issue, issues_of
from openflash.project import Project
from openflash.runtime.dumpable import PROTECTION

__all__ = ["Issue", "check", "run_checks"]


def check(
    path: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    strict: Annotated[bool, typer.Option(help="Treat warnings as errors.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Forget remembered source-build failures: build them again."
        ),
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Check that every endpoint's dependencies resolve, before anything runs.

    Example: flash check --strict
    """
    project = load_project(path)
    if refresh:
        forgotten = Preparer().forget_build_failures()
        if forgotten and not (quiet or as_json):
            console.print(f"forgot {forgotten} failed source build(s): they will be tried again")
    issues = run_checks(project, Reporter(quiet=quiet or as_json, verbose=verbose))
    issues[:0] = [  # a file that does not import serves nothing: the check fails
        Issue(
            "error",
            "import-failed",
            [str(failure.file.relative_to(project.root))],
            "failed to import, so its endpoints are left out (its traceback is above); fix it "
            "and check again",
        )
        for failure in project.failures
    ]
    failing = [i for i in issues if i.level == "error" or (strict and i.level == "warning")]
    settings = Preparer().settings
    mode = layer_mode(settings.namespaces)
    # What keeps the caller's variables from workers that share its PID namespace.
    caller = PROTECTION[settings.non_dumpable]
    if as_json:
        report = {"ok": not failing, "issues": [asdict(i) for i in issues]}
        report["caller_environ"] = caller
        typer.echo(json.dumps({**report, "layer_mode": asdict(mode)}, indent=2))
    else:
        colours = {"error": "red", "warning": "yellow", "suggestion": "cyan", "info": "blue"}
        for issue in issues:
            who = ", ".join(issue.endpoints)
            console.print(
                f"[{colours[issue.level]}]{issue.level}[/]: [bold]{who}[/bold]: {issue.message}"
            )
        if all(i.level == "info" for i in issues) and not quiet:
            console.print("[green]all endpoints resolve[/green]")
        if not quiet:
            console.print(f"system layers: {mode.described}")
            console.print(f"caller's environment: {caller}")
    raise typer.Exit(1 if failing else 0)


def run_checks(project: Project, reporter: Reporter) -> list[Issue]:
    """Every issue of ``project``'s dependency sets (prepare/dependency_checks.py), each set
    resolved by the preparer in parallel."""
    preparer = Preparer()
    sets = dependency_sets(project, preparer)
    results = reporter.run(
        [
            (
                s.label,
                functools.partial(
                    preparer.check,
                    s.dependencies,
                    s.system_dependencies,
                    s.options,
                    s.base,
                    s.project_lock,
                    [m for modules in s.imports.values() for m in modules],
                ),
            )
            for s in sets
        ]
    )
    path = find_lockfile(project.root)
    return issues_of(sets, results, preparer.lockfile(path) if path else None)
