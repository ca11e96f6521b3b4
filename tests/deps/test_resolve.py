"""Resolution with the real uv against the real index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openflash.deps.resolve import resolve
from openflash.envs.store import Store
from openflash.errors import DependencyConflictError, DependencyError


def test_resolves_pins_and_transitive_dependencies(tmp_path: Path, uv_cache: Path) -> None:
    lock = resolve(("requests==2.32.3",), store=Store(tmp_path), uv_cache=uv_cache, ttl=60)
    packages = lock.packages
    assert packages["requests"] == "==2.32.3"
    assert {"urllib3", "idna", "certifi", "charset-normalizer"} <= set(packages)
    assert lock.text.endswith("\n") and lock.text == "".join(sorted(lock.text.splitlines(True)))


def test_no_dependencies_resolve_without_uv(tmp_path: Path) -> None:
    lock = resolve((), store=Store(tmp_path), uv_cache=tmp_path / "unused", ttl=60)
    assert lock.text == ""
    assert not (tmp_path / "unused").exists()


def test_resolution_is_reused_within_the_ttl_and_redone_after(
    tmp_path: Path, uv_cache: Path
) -> None:
    store = Store(tmp_path)
    first = resolve(("six",), store=store, uv_cache=uv_cache, ttl=100, now=1000.0)
    [cache_file] = store.resolutions.glob("*.json")
    # Make the cached answer recognisable: a reuse returns it verbatim, a re-resolution does not.
    data = json.loads(cache_file.read_text())
    data["lock"] = "six==0.0.1-cached\n"
    cache_file.write_text(json.dumps(data))
    reused = resolve(("six",), store=store, uv_cache=uv_cache, ttl=100, now=1099.0)
    assert reused.text == "six==0.0.1-cached\n"
    assert reused.resolved_at == first.resolved_at == 1000.0
    redone = resolve(("six",), store=store, uv_cache=uv_cache, ttl=100, now=1100.0)
    assert redone.text == first.text
    assert redone.resolved_at == 1100.0


def test_expired_resolution_is_used_when_the_index_is_unreachable(
    tmp_path: Path,
    uv_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store(tmp_path)
    first = resolve(("six",), store=store, uv_cache=uv_cache, ttl=10, now=1000.0)
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    stale = resolve(("six",), store=store, uv_cache=uv_cache / "empty", ttl=10, now=5000.0)
    assert stale.text == first.text
    assert "re-resolving six failed (network)" in caplog.text


def test_unreachable_index_without_a_cached_resolution_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    with pytest.raises(DependencyError, match="could not reach the package index"):
        resolve(("six",), store=Store(tmp_path), uv_cache=tmp_path / "uv", ttl=10)


def test_conflicting_pins_raise_with_uvs_explanation(tmp_path: Path, uv_cache: Path) -> None:
    with pytest.raises(DependencyConflictError) as info:
        resolve(
            ("requests==2.32.3", "urllib3<1.21"), store=Store(tmp_path), uv_cache=uv_cache, ttl=60
        )
    assert "requests==2.32.3 depends on urllib3" in str(info.value)
    assert not list(Store(tmp_path).resolutions.glob("*.json"))  # failures are not cached


def test_unknown_package_raises_naming_it(tmp_path: Path, uv_cache: Path) -> None:
    with pytest.raises(DependencyError, match="'openflash-no-such-package-3141' was not found"):
        resolve(
            ("openflash-no-such-package-3141",), store=Store(tmp_path), uv_cache=uv_cache, ttl=60
        )
