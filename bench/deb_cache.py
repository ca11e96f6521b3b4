"""Debian archive traffic of a cluster's system layer, with and without the cluster package cache.

N node apts (each its own FLASH_APT_DIR: index, .deb cache and state, as on N machines) download
the closure of the same system packages at once, as N node agents do when they build one layer.
Without the cache each asks the Debian archive (the real one, deb.debian.org) itself; with it
(deps/package_cache.py, on loopback as the driver runs it on the cluster address) each node's apt
uses it as its proxy for the archive's host, and the cache counts what it fetched upstream and
what it served as a hit (``CacheRecord``). The package lists count too: each node refreshes its
private index (through the cache, by hash, when it is there).

Run: python bench/deb_cache.py [N ...]  (default 1 4; prints bench/RESULTS.md's table)
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/http.py would shadow the standard library's http: this folder goes.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from openflash.deps.apt import Apt  # noqa: E402
from openflash.deps.package_cache import PackageCache  # noqa: E402

#: The layer: graphviz's closure on Debian 12 (about 30 .debs; what the base system lacks).
NAMES = ["graphviz"]
STATUS = Path("/var/lib/dpkg/status")


def nodes_download(n: int, root: Path, cache: PackageCache | None) -> tuple[float, list[int]]:
    """N node apts download the closure at once: seconds, and each node's .deb bytes."""
    errors: list[BaseException] = []
    sizes = [0] * n

    def node(i: int) -> None:
        apt = Apt(root / f"node{i}", STATUS, 3600.0)
        if cache is not None:
            apt.use_proxy(cache.proxy_url, cache.apt_hosts)
        try:
            with apt.locked():
                sizes[i] = sum(p.stat().st_size for p in apt.download(apt.simulate(NAMES)))
        except BaseException as e:
            errors.append(e)

    started = time.monotonic()
    threads = [threading.Thread(target=node, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started, sizes


def main(counts: list[int]) -> None:
    hosts = Apt(Path(tempfile.mkdtemp(prefix="deb-bench-")), STATUS, 3600.0).repository_hosts()
    print(
        "| nodes | how | upstream requests (.debs / lists / other) | .deb MB from upstream | time |"
    )
    print("| --- | --- | --- | --- | --- |")
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="deb-bench-") as scratch:
            seconds, sizes = nodes_download(n, Path(scratch), None)
            debs = len(list(Path(scratch).glob("node*/archives/*.deb")))
            mb = sum(sizes) / 1e6
            how = "each node from the archive"
            print(f"| {n} | {how} | {debs} / all / all | {mb:.1f} | {seconds:.1f} s |")
        with tempfile.TemporaryDirectory(prefix="deb-bench-") as scratch:
            cache = PackageCache(Path(scratch) / "cache", "http://127.0.0.1:9/simple", hosts)
            cache.start()
            try:
                seconds, _ = nodes_download(n, Path(scratch), cache)
            finally:
                cache.close()
            fetched = {k: 0 for k in ("deb", "apt-index", "apt-other")}
            for record, times in cache.records.items():
                if record.outcome in ("fetched", "passed"):
                    fetched[record.kind] += times
            mb = sum(p.stat().st_size for p in Path(scratch).glob("cache/apt/*/*.deb")) / 1e6
            print(
                f"| {n} | through the cache | {fetched['deb']} / {fetched['apt-index']} / "
                f"{fetched['apt-other']} | {mb:.1f} | {seconds:.1f} s |"
            )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 4])
