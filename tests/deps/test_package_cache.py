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
from openflash.deps.apt import Apt, http_hosts
from openflash.deps.package_cache import CacheRecord, PackageCache

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


def node_apt(root: Path) -> Apt:
    """A node's private apt (its own index and .deb cache), as each node's store has."""
    return Apt(root, Path("/var/lib/dpkg/status"), 3600)


def test_debs_are_fetched_from_the_archive_once_for_many_nodes(tmp_path: Path) -> None:
    """Real apt, the real Debian archive: two node apts download ``tree`` through the cache;
    apt verifies what the cache serves against the archive's signed index."""
    hosts = node_apt(tmp_path / "driver").repository_hosts()
    assert hosts, "this machine's apt sources name no plain-http archive"
    cache = PackageCache(tmp_path / "cache", "http://127.0.0.1:9/simple", hosts)
    cache.start()
    try:
        got = []
        for name in ("node1", "node2"):
            apt = node_apt(tmp_path / name)
            apt.use_proxy(cache.proxy_url, hosts)
            with apt.locked():
                got.append(apt.download(apt.simulate(["tree"])))
    finally:
        cache.close()
    (first,), (second,) = got
    assert first.name == second.name and first.name.startswith("tree_")
    assert first.read_bytes() == second.read_bytes()
    debs = {(r.name, r.outcome): n for r, n in cache.records.items() if r.kind == "deb"}
    assert debs == {(first.name, "fetched"): 1, (first.name, "hit"): 1}
    # The archive's package lists too: fetched by the first node, hits for the second.
    index = [r for r in cache.records if r.kind == "apt-index"]
    assert index and all(cache.records[CacheRecord("apt-index", r.name, "hit")] for r in index)


def test_the_apt_proxy_serves_only_the_archives_hosts_and_file_names(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache", "http://127.0.0.1:9/simple", ("deb.debian.org",))
    cache.start()
    try:
        proxy = urllib.request.ProxyHandler({"http": cache.proxy_url})
        opener = urllib.request.build_opener(proxy)
        with pytest.raises(urllib.error.HTTPError) as caught:
            opener.open("http://example.org/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb")
        assert caught.value.code == 403
        # A name that would be a path in the store is not fetched, whatever it ends with.
        with pytest.raises(urllib.error.HTTPError) as caught:
            opener.open("http://deb.debian.org/debian/pool/..%2F..%2F..%2Fescaped.deb")
        assert caught.value.code == 404
    finally:
        cache.close()
    assert not cache.records


def test_apt_falls_back_to_the_archive_when_the_cache_is_unreachable(tmp_path: Path) -> None:
    hosts = node_apt(tmp_path / "driver").repository_hosts()
    apt = node_apt(tmp_path / "node")
    apt.use_proxy("http://127.0.0.1:9", hosts)  # nothing listens there
    with apt.locked():
        (deb,) = apt.download(apt.simulate(["tree"]))
    assert deb.is_file()


def test_http_hosts_keeps_the_plain_http_archives_once() -> None:
    text = (
        "http://deb.debian.org/debian/\nhttp://deb.debian.org/debian-security/\n"
        "https://deb.nodesource.com/node_20.x/\nhttp://MIRROR.example/ubuntu/\n"
    )
    assert http_hosts(text) == ("deb.debian.org", "mirror.example")
