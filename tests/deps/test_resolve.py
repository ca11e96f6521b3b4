"""Resolution with the real uv against the real index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from index_server import serve_index
from openflash import _subprocess
from openflash.deps.resolve import resolve, without_wheels
from openflash.envs.store import Store
from openflash.errors import DependencyConflictError, DependencyError

from helpers import make_wheel


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
    # The index unreachable through a proxy where nothing listens (UV_INDEX_URL would be
    # another resolution: uv's index variables key resolutions).
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
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


def _cut_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request uv sends now fails (a proxy nobody listens on); uv's cache stays usable."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")


def test_a_new_set_asks_the_index_whatever_uvs_cache_holds(
    tmp_path: Path, uv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "home")
    folder = tmp_path / "index"
    make_wheel(folder, "openflash_fresh_demo", "1.0", {"openflash_fresh_demo.py": ""})
    with serve_index(folder) as (url, _):  # pages say max-age=600, as PyPI's do
        monkeypatch.setenv("UV_INDEX_URL", url)
        old = resolve(("openflash-fresh-demo",), store=store, uv_cache=uv_cache, ttl=100)
        assert old.packages == {"openflash-fresh-demo": "==1.0"}  # uv's cache now holds 1.0
        make_wheel(folder, "openflash_fresh_demo", "2.0", {"openflash_fresh_demo.py": ""})
        new = resolve(("openflash-fresh-demo<3",), store=store, uv_cache=uv_cache, ttl=100)
    assert new.packages == {"openflash-fresh-demo": "==2.0"}


def test_an_unreachable_index_falls_back_to_uvs_cache_and_says_so(
    tmp_path: Path,
    uv_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store(tmp_path)
    both = resolve(("requests==2.32.3", "six"), store=store, uv_cache=uv_cache, ttl=100)
    _cut_the_network(monkeypatch)
    alone = resolve(("requests==2.32.3",), store=store, uv_cache=uv_cache, ttl=100)
    assert alone.packages == {k: v for k, v in both.packages.items() if k != "six"}
    assert "resolved requests==2.32.3 offline from uv's cache" in caplog.text
    # Not cached: the next call asks the index again.
    cached = [json.loads(f.read_text())["specs"] for f in store.resolutions.glob("*.json")]
    assert cached == [["requests==2.32.3", "six"]]


def test_an_unreachable_index_and_nothing_in_uvs_cache_fails_clearly(
    tmp_path: Path, uv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cut_the_network(monkeypatch)
    with pytest.raises(DependencyError, match="could not reach the package index") as info:
        resolve(("openflash-never-cached-3141",), store=Store(tmp_path), uv_cache=uv_cache, ttl=9)
    assert "UV_INDEX_URL" in info.value.hint


def test_the_wheels_check_asks_uvs_cache_before_the_index(
    tmp_path: Path, uv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``without_wheels`` (the warning before a source build, on the way to every first
    environment) is answered by uv's cache alone when it holds a wheel of every pin: one
    ``--offline`` run; with nothing cached, the index is asked after it. The uv runs are
    recorded as they pass (each still runs)."""
    folder = tmp_path / "index"
    make_wheel(folder, "openflash_wheels_demo", "1.0", {"openflash_wheels_demo.py": ""})
    runs: list[list[str]] = []
    real_run = _subprocess.run

    def recorded(argv: list[str], **kwargs: object) -> _subprocess.Completed:
        runs.append([str(a) for a in argv])
        return real_run(argv, **kwargs)  # type: ignore[arg-type]

    with serve_index(folder) as (url, _):
        monkeypatch.setenv("UV_INDEX_URL", url)
        lock = resolve(("openflash-wheels-demo",), store=Store(tmp_path), uv_cache=uv_cache, ttl=1)
        monkeypatch.setattr(_subprocess, "run", recorded)
        assert without_wheels(lock.text, uv_cache=uv_cache) == []
        assert len(runs) == 1 and "--offline" in runs[0], runs
        runs.clear()
        empty = tmp_path / "empty-uv-cache"
        assert without_wheels(lock.text, uv_cache=empty) == []
    assert ["--offline" in argv for argv in runs] == [True, False], runs
