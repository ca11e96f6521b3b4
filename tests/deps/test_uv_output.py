"""The pure parsers of uv's output, on outputs saved from uv 0.13 (tests/deps/data/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openflash.deps.resolve import Lock, failure_to_error, parse_lock
from openflash.errors import DependencyConflictError, DependencyError

DATA = Path(__file__).parent / "data"


def saved(name: str) -> str:
    return (DATA / name).read_text()


def test_conflict_carries_uvs_explanation() -> None:
    error = failure_to_error(saved("uv-conflict.txt"), ("requests==2.32.3", "urllib3<1.21"))
    assert type(error) is DependencyConflictError
    text = str(error)
    assert "cannot be installed together: 'requests==2.32.3', 'urllib3<1.21'" in text
    assert "Because requests==2.32.3 depends on urllib3>=1.21.1,<3" in text
    assert "we can conclude that your requirements are unsatisfiable" in text
    assert "No solution found" not in text
    assert "cause:" not in text and "error:" not in text
    assert error.hint


def test_torch_pair_conflict_is_a_conflict() -> None:
    error = failure_to_error(
        saved("uv-conflict-torch.txt"), ("torch==2.1.0", "torchvision==0.17.0")
    )
    assert isinstance(error, DependencyConflictError)
    assert "torchvision==0.17.0 depends on torch==2.2.0" in str(error)


def test_unknown_package_is_named() -> None:
    error = failure_to_error(saved("uv-not-found.txt"), ("nonexistent-pkg-xyz-123",))
    assert type(error) is DependencyError
    assert "package 'nonexistent-pkg-xyz-123' was not found on the package index" in error.message
    assert "https://pypi.org/project/nonexistent-pkg-xyz-123/" in error.hint


def test_missing_version_says_so() -> None:
    error = failure_to_error(saved("uv-no-version.txt"), ("six==9.9.9",))
    assert type(error) is DependencyError
    assert "no release matches 'six==9.9.9'" in error.message


def test_network_failure_says_what_to_check() -> None:
    error = failure_to_error(saved("uv-network.txt"), ("six==1.16.0",))
    assert type(error) is DependencyError
    assert "could not reach the package index" in error.message
    assert "Connection refused" in error.message
    assert "network" in error.hint


def test_offline_cache_miss_is_reported_with_uvs_hint() -> None:
    error = failure_to_error(saved("uv-offline-miss.txt"), ("six==1.17.0",))
    assert "six was not found in the cache" in str(error)
    assert "network was disabled" in str(error)


def test_unrecognised_failure_keeps_the_text() -> None:
    error = failure_to_error("error: something new went wrong\n", ("x",))
    assert type(error) is DependencyError
    assert "resolving 'x' failed:\nsomething new went wrong" in error.message


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("six==1.16.0\npillow==13.0.0\n", "pillow==13.0.0\nsix==1.16.0\n"),
        ("# header\n#    uv pip compile -\nsix==1.16.0\n    # via -r -\n", "six==1.16.0\n"),
        ("", ""),
        (
            "demo @ file:///tmp/demo-1.0-py3-none-any.whl\n",
            "demo @ file:///tmp/demo-1.0-py3-none-any.whl\n",
        ),
        (
            "six==1.16.0 ; python_version >= '3'  # comment\n",
            "six==1.16.0 ; python_version >= '3'\n",
        ),
    ],
)
def test_parse_lock_keeps_only_pins_sorted(stdout: str, expected: str) -> None:
    assert parse_lock(stdout) == expected


def test_lock_lists_its_packages() -> None:
    lock = Lock(("six",), "demo @ file:///tmp/d.whl\nsix==1.16.0\n", 0.0)
    assert lock.packages == {"demo": "@ file:///tmp/d.whl", "six": "==1.16.0"}
