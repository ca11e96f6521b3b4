"""The rules of ``flash check``, over what the preparer found: pure functions, no I/O.

- errors: sets that cannot be installed together, system packages apt does not know (the
  FlashError the preparer raised for the set);
- warnings: unpinned specs; packages with no wheel here (built from source); pins of releases
  their index has yanked; a flash.lock out of date with the code; modules an endpoint imports
  that its set does not provide (not the standard library's, nor the project's own), with the
  distribution to add (deps/imports.py), or said not verified where some package's modules
  could not be read (deps/package_modules.py);
- suggestions: sets that differ in one package only, which could share one environment;
  packages a GPU endpoint gets from the GPU base set (deps/gpu_base.py), which it could declare
  to pin;
- information: the torch build a set installs (cpu, cu121, ...) and what it downloads.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from openflash.deps.download_sizes import human_size
from openflash.deps.imports import distribution_for_module
from openflash.deps.lockfile import LockFile
from openflash.deps.project_lock import ProjectLock
from openflash.errors import FlashError
from openflash.prepare.outcomes import SetCheck

__all__ = ["CheckedSet", "Issue", "issues_of", "no_wheel_text"]

_ORDER = {"error": 0, "warning": 1, "suggestion": 2, "info": 3}
#: What every worker can import without declaring it (the worker runtime, envs/bundle.py).
_RUNTIME = frozenset({"openflash", "runpod_flash", "runpod", "cloudpickle"})


@dataclass(frozen=True)
class Issue:
    """One finding: ``level`` is error, warning, suggestion or info; ``kind`` a short name
    (``no-wheel``, ``yanked``, ``unpinned``, ``stale-lock``, ``near-duplicate``, ``gpu-base``,
    ``torch-variant``, or an error's class name); ``endpoints`` the names it is about."""

    level: str
    kind: str
    endpoints: list[str]
    message: str


class CheckedSet(Protocol):
    """A dependency set as the CLI groups endpoints: their names and shared sets."""

    @property
    def dependencies(self) -> tuple[str, ...]: ...
    @property
    def system_dependencies(self) -> tuple[str, ...]: ...
    @property
    def names(self) -> list[str]: ...
    @property
    def label(self) -> str: ...
    @property
    def base(self) -> tuple[str, ...]: ...
    @property
    def project_lock(self) -> ProjectLock | None:
        """The project's uv.lock, which pins what it holds (no ``unpinned`` warning for those)."""
        ...

    @property
    def imports(self) -> dict[str, tuple[str, ...]]:
        """Each endpoint's top-level imports, less the project's own modules."""
        ...


def issues_of(
    sets: Sequence[CheckedSet],
    results: Sequence[SetCheck | BaseException],
    lockfile: LockFile | None,
) -> list[Issue]:
    """Every issue of ``sets``, given each set's check (or the exception it raised) and the
    project's flash.lock; sorted errors first. Raises an exception that is no FlashError."""
    issues: list[Issue] = []
    for dep_set, result in zip(sets, results, strict=True):
        if isinstance(result, FlashError):
            issues.append(Issue("error", type(result).__name__, dep_set.names, str(result)))
        elif isinstance(result, BaseException):
            raise result
        else:
            issues += [_no_wheel(dep_set.names, package) for package in result.no_wheels]
            issues += [Issue("warning", "yanked", dep_set.names, t) for t in result.lock.yanked]
            if result.torch_variant is not None:
                issues.append(_torch_variant(dep_set.names, result))
            issues += _undeclared(dep_set.imports, result.provided, result.unverified)
        declared = [s for s in dep_set.dependencies if s not in dep_set.base]
        locked = dep_set.project_lock.versions if dep_set.project_lock is not None else {}
        issues += [
            _unpinned(dep_set.names, s)
            for s in declared
            if not _pinned(s) and canonicalize_name(Requirement(s).name) not in locked
        ]
        issues += [_from_base(dep_set.names, s) for s in dep_set.base]
    if lockfile is not None:
        issues += _stale_lock(lockfile, sets)
    issues += _near_duplicates(sets)
    return sorted(issues, key=lambda i: (_ORDER[i.level], i.endpoints, i.kind))


def no_wheel_text(package: str) -> str:
    """The warning for a locked package with no wheel here (``flash check``, a first call)."""
    return (
        f"{package} has no wheel for this platform and would be built "
        "from source (slow, needs compilers); pin a release with wheels"
    )


def _undeclared(
    imports: dict[str, tuple[str, ...]], provided: frozenset[str], unverified: tuple[str, ...]
) -> list[Issue]:
    """An issue per module an endpoint imports that neither its set, the standard library nor
    the worker runtime (openflash, its ``runpod`` shim) provides: ``undeclared-import``, or
    ``unverified-import`` where some of the set's packages (``unverified``) had their modules
    read from nowhere (only their names are known), so one of them may provide it."""
    issues = []
    for name, modules in sorted(imports.items()):
        for module in modules:
            top = module.split(".")[0]  # `from nltk.tokenize import x`: nltk provides it
            if top in provided or top in sys.stdlib_module_names or top in _RUNTIME:
                continue
            add = distribution_for_module(module)
            if unverified:
                shown = ", ".join(unverified[:5]) + (
                    f" and {len(unverified) - 5} more" if len(unverified) > 5 else ""
                )
                issues.append(
                    Issue(
                        "warning",
                        "unverified-import",
                        [name],
                        f"imports {module!r}, which no dependency is known to provide; not "
                        f"verified: the modules of {shown} were not read (not installed, not "
                        f"in uv's cache, wheel not fetched); if none provides it, add {add!r}",
                    )
                )
                continue
            issues.append(
                Issue(
                    "warning",
                    "undeclared-import",
                    [name],
                    f"imports {module!r}, which none of its dependencies provides: add "
                    f"{add!r} to its dependencies",
                )
            )
    return issues


def _torch_variant(names: list[str], result: SetCheck) -> Issue:
    variant = result.torch_variant
    what = (
        "PyPI's default build (CUDA on Linux)" if variant == "default" else f"the {variant} build"
    )
    size = result.torch_download
    shown = f"{human_size(size)} to download" if size is not None else "download size unknown"
    return Issue("info", "torch-variant", names, f"torch: {what}, {shown}")


def _from_base(names: list[str], spec: str) -> Issue:
    return Issue(
        "suggestion",
        "gpu-base",
        names,
        f"{spec}: from the GPU base image (imported, not in dependencies); declare it to pin "
        "a version",
    )


def _no_wheel(names: list[str], package: str) -> Issue:
    return Issue("warning", "no-wheel", names, no_wheel_text(package))


def _unpinned(names: list[str], spec: str) -> Issue:
    return Issue(
        "warning",
        "unpinned",
        names,
        f"{spec!r} is not pinned; pin it with '==' (or run `flash lock`) so that builds are "
        "reproducible",
    )


def _pinned(spec: str) -> bool:
    req = Requirement(spec)
    return req.url is not None or any(
        s.operator in ("==", "===") and "*" not in s.version for s in req.specifier
    )


def _stale_lock(lockfile: LockFile, sets: Sequence[CheckedSet]) -> list[Issue]:
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


def _near_duplicates(sets: Sequence[CheckedSet]) -> list[Issue]:
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
