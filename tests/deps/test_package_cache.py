"""The cluster package cache against a loopback index that counts what it is asked: uv installs
through it, each file is fetched from the index once however many stores install it (at once),
verified by its sha256, and a project the cache cannot serve falls back to the index."""

from __future__ import annotations

import os
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from index_server import serve_index
from openflash.deps.package_cache import PackageCache

from helpers import make_wheel


def install(target: Path, cache_dir: Path, index: str, cache: str | None, *specs: str) -> None:
    env = {**os.environ, "UV_INDEX_URL": index}
    env.pop("UV_EXTRA_INDEX_URL", None)
    if cache:
        env["UV_EXTRA_INDEX_URL"] = cache
    done = subprocess.run(
        ["uv", "pip", "install", "--target", str(target), "--cache-dir", str(cache_dir), *specs],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def test_each_file_is_fetched_once_for_many_stores(tmp_path: Path) -> None:
    wheels = tmp_path / "index"
    make_wheel(wheels, "acme_one", "1.0", {"acme_one.py": "X = 1\n"})
    make_wheel(wheels, "acme_two", "2.0", {"acme_two.py": "X = 2\n"})
    with serve_index(wheels) as (index, requests):
        cache = PackageCache(tmp_path / "cache", index)
        url = cache.start()
        try:
            stores = [tmp_path / f"node{i}" for i in range(4)]
            threads = [
                threading.Thread(
                    target=install,
                    args=(s / "site", s / "uv", index, url, "acme-one==1.0", "acme-two==2.0"),
                )
                for s in stores
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            cache.close()
        assert all((s / "site" / "acme_two.py").read_text() == "X = 2\n" for s in stores)
        files = sorted(r for r in requests if r.startswith("/files/"))
        assert files == [
            "/files/acme_one-1.0-py3-none-any.whl",
            "/files/acme_two-2.0-py3-none-any.whl",
        ]
        assert sorted(r for r in requests if r.startswith("/simple/")) == [
            "/simple/acme-one/",
            "/simple/acme-two/",
        ]


def test_a_project_the_cache_cannot_serve_falls_back_to_the_index(tmp_path: Path) -> None:
    wheels = tmp_path / "index"
    make_wheel(wheels, "acme_one", "1.0", {"acme_one.py": "X = 1\n"})
    with serve_index(wheels) as (index, requests):
        cache = PackageCache(tmp_path / "cache", "http://127.0.0.1:9/simple")  # unreachable
        url = cache.start()
        try:
            install(tmp_path / "site", tmp_path / "uv", index, url, "acme-one==1.0")
        finally:
            cache.close()
        assert (tmp_path / "site" / "acme_one.py").is_file()
        assert "/files/acme_one-1.0-py3-none-any.whl" in requests


def test_a_file_that_does_not_match_its_hash_is_not_served(tmp_path: Path) -> None:
    wheels = tmp_path / "index"
    wheel = make_wheel(wheels, "acme_one", "1.0", {"acme_one.py": "X = 1\n"})
    with serve_index(wheels) as (index, _):
        cache = PackageCache(tmp_path / "cache", index)
        url = cache.start()
        try:
            page = urllib.request.urlopen(f"{url}/acme-one/").read().decode()
            link = page.split('href="')[1].split("#")[0]
            wheel.write_bytes(wheel.read_bytes() + b"tampered")  # the index now serves other bytes
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(url.rsplit("/simple", 1)[0] + link)
            assert caught.value.code == 404
        finally:
            cache.close()
        assert not list((tmp_path / "cache").rglob("*.whl"))
