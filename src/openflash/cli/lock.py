"""``flash lock``: pin every endpoint's dependencies, with hashes, in ``flash.lock``.

Sets already in the lock keep their versions (uv is given them as preferences) unless
``--upgrade`` lets everything move, or ``--upgrade-package NAME`` lets one package move.
``--refresh`` forgets the source builds remembered as failed, so that they are tried again.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from openflash.cli.common import (
    Quiet,
    Reporter,
    Verbose,
    console,
    dependency_sets,
    fail,
    load_project,
)
from openflash.deps.lockfile import LOCK_NAME, LockEntry, LockFile
from openflash.deps.system import distribution_release
from openflash.envs.environment import platform_tag, python_tag
from openflash.prepare import Preparer

__all__ = ["lock"]


def lock(
    targets: Annotated[
        list[str] | None,
        typer.Argument(help="The project folder (default: here), then packages to upgrade."),
    ] = None,
    upgrade: Annotated[
        bool, typer.Option(help="Let locked versions move (all, or the named packages).")
    ] = False,
    upgrade_package: Annotated[
        list[str] | None, typer.Option("--upgrade-package", "-P", help="Let this package move.")
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Forget remembered source-build failures: build them again."
        ),
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write flash.lock: every endpoint's packages, pinned with hashes, and its system packages.

    Examples: flash lock · flash lock --upgrade · flash lock --upgrade numpy
    """
    path, packages = _split_targets(targets or [])
    packages += list(upgrade_package or [])
    if packages and not upgrade and not upgrade_package:
        fail(f"{packages[0]!r} is not a folder", "to upgrade packages: flash lock --upgrade NAME")
    project = load_project(path)
    preparer = Preparer()
    if refresh:
        forgotten = preparer.forget_build_failures()
        if forgotten and not quiet:
            console.print(f"forgot {forgotten} failed source build(s): they will be tried again")
    target = project.root / LOCK_NAME
    previous = preparer.lockfile(target) if target.is_file() else None
    sets = dependency_sets(project, preparer)
    moving: bool | list[str] = packages if packages else upgrade

    def lock_set(index: int) -> LockEntry:
        dep_set = sets[index]
        old = previous.find(dep_set.dependencies, dep_set.system_dependencies) if previous else None
        return preparer.lock_entry(
            dep_set.names,
            dep_set.dependencies,
            dep_set.system_dependencies,
            previous=old,
            upgrade=moving,
            options=dep_set.options,
            project=dep_set.project_lock,
        )

    reporter = Reporter(quiet=quiet, verbose=verbose)
    results = reporter.run([(s.label, functools.partial(lock_set, i)) for i, s in enumerate(sets)])
    failed = [(s, r) for s, r in zip(sets, results, strict=True) if isinstance(r, BaseException)]
    for dep_set, error in failed:
        console.print(f"[red]error:[/red] [bold]{dep_set.label}[/bold]: {error}")
    if failed:
        raise typer.Exit(1)
    lockfile = LockFile(
        target,
        python_tag(),
        platform_tag(),
        [r for r in results if isinstance(r, LockEntry)],
        distribution_release(),
    )
    lockfile.write()
    count = sum(len(e.packages) for e in lockfile.entries)
    reporter.say(f"wrote {target} ({len(lockfile.entries)} environment(s), {count} packages)")


def _split_targets(targets: list[str]) -> tuple[Path, list[str]]:
    """The project folder (the first argument that is one) and the rest: package names."""
    path = Path(".")
    rest = []
    for target in targets:
        if path == Path(".") and Path(target).is_dir():
            path = Path(target)
        else:
            rest.append(target)
    return path, rest
