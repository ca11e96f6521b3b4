"""Hostile and broken dependency strings: refused at decoration, named, nothing executed."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from openflash import CpuLiveServerless, remote
from openflash.errors import DependencyError, SystemDependencyError

from corpus import dependency_corpus, system_corpus

DEPENDENCIES = dependency_corpus()
SYSTEM = system_corpus()


def test_the_corpora_are_large_and_varied() -> None:
    assert sum(map(len, DEPENDENCIES.values())) >= 200
    assert sum(map(len, SYSTEM.values())) >= 100
    assert all(len(family) >= 5 for family in [*DEPENDENCIES.values(), *SYSTEM.values()])


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Any process started while this is active is recorded and refused."""
    started: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        started.append(args[1] if len(args) > 1 else kwargs.get("args"))
        raise AssertionError(f"a process was started: {started[-1]!r}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    return started


def _decorate(**deps: list[str]) -> None:
    @remote(CpuLiveServerless(name="hostile"), **deps)
    def f() -> int:
        return 1


def _check_family(
    items: list[str], field: str, error: type[DependencyError], started: list[object]
) -> None:
    accepted, unclear = [], []
    for value in items:
        try:
            _decorate(**{field: ["ok-package" if field == "dependencies" else "wget", value]})
        except error as e:
            text = str(e)
            # A value with credentials in a URL is named with them blanked out.
            shown = re.sub(r"//[^/@\s]+@", "//***@", value)
            named = any(repr(v) in text or repr(v[:40]) in text for v in (value, shown))
            if f"{field}[1]" not in text or not named or not e.hint:
                unclear.append((value, text))
        else:
            accepted.append(value)
    assert not accepted, f"accepted: {accepted!r}"
    assert not unclear, f"refused without naming the value or saying what to do: {unclear!r}"
    assert not started


@pytest.mark.parametrize("family", list(DEPENDENCIES))
def test_bad_dependency_strings_are_refused_by_name(
    family: str, nothing_runs: list[object], report: Callable[[str, str, str], None]
) -> None:
    _check_family(DEPENDENCIES[family], "dependencies", DependencyError, nothing_runs)
    report(
        "bad input",
        f"{len(DEPENDENCIES[family])} dependency strings: {family}",
        "each refused at decoration, naming the string and its index, with a hint; "
        "no process started",
    )


@pytest.mark.parametrize("family", list(SYSTEM))
def test_bad_system_dependency_strings_are_refused_by_name(
    family: str, nothing_runs: list[object], report: Callable[[str, str, str], None]
) -> None:
    _check_family(SYSTEM[family], "system_dependencies", SystemDependencyError, nothing_runs)
    report(
        "bad input",
        f"{len(SYSTEM[family])} system dependency strings: {family}",
        "each refused at decoration, naming the string and its index, with a hint; "
        "nothing reaches apt or a shell",
    )


def test_non_strings_are_refused_by_type(nothing_runs: list[object]) -> None:
    for value in [1, None, b"numpy", ["numpy"], {"numpy": 1}, 1.5, object()]:
        with pytest.raises(DependencyError, match=r"dependencies\[0\] is .* not a string"):
            _decorate(dependencies=[value])
        with pytest.raises(SystemDependencyError, match=r"system_dependencies\[0\] is .*"):
            _decorate(system_dependencies=[value])
    with pytest.raises(DependencyError, match="must be a list of strings, got the string"):
        _decorate(dependencies="numpy pandas")
