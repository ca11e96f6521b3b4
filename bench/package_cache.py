"""Index traffic of a cluster build, with and without the cluster package cache, by simulation.

N node stores (each its own FLASH_HOME and uv cache, as on N machines) build the same
environment from one lock at once, as N node agents do, with the preparer's build_from_lock.
The package index is a loopback PEP 503 index (tests/index_server.py) that counts what it is
asked for: pages, files and bytes. Without the cache every node asks the index itself; with it
(deps/package_cache.py, on loopback as the head would run it on the cluster address) the nodes
ask the cache first (UV_EXTRA_INDEX_URL) and the index stays their fallback (UV_INDEX_URL).

Run: python bench/package_cache.py [N ...]  (default 1 4 16; prints bench/RESULTS.md's table)
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/http.py would shadow the standard library's http: this folder goes, tests/ comes.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "tests"))

from index_server import serve_index  # noqa: E402
from openflash._settings import Settings  # noqa: E402
from openflash.deps.package_cache import PackageCache  # noqa: E402
from openflash.prepare import Preparer  # noqa: E402

from helpers import make_wheel  # noqa: E402

#: The environment: five packages of about 2 MB each (random data, base64, in each wheel).
PACKAGES = [(f"bench_pkg_{i}", "1.0") for i in range(5)]
PAYLOAD = 2_000_000


def build_nodes(n: int, root: Path, lock: str) -> float:
    """N node stores build ``lock`` at once; the seconds it took."""
    errors: list[BaseException] = []

    def node(i: int) -> None:
        home = root / f"node{i}"
        settings = Settings(
            home=home, uv_cache_dir=home / "uv-cache", resolve_ttl=3600.0, require_gpu=False
        )
        try:
            Preparer(settings).build_from_lock(lock, None)
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
    return time.monotonic() - started


def traffic(requests: list[str], folder: Path) -> tuple[int, int, float]:
    files = [r for r in requests if r.startswith("/files/")]
    size = sum((folder / r.rsplit("/", 1)[-1]).stat().st_size for r in files)
    return len(requests) - len(files), len(files), size / 1e6


def main(counts: list[int]) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="openflash-bench-cache-", dir="/tmp") as tmp:
        wheels = Path(tmp) / "index"
        for name, version in PACKAGES:
            module = name
            make_wheel(
                wheels,
                name,
                version,
                {
                    f"{module}/__init__.py": "X = 1\n",
                    f"{module}/data.txt": base64.b64encode(os.urandom(PAYLOAD)).decode(),
                },
            )
        lock = "".join(f"{name}=={version}\n" for name, version in PACKAGES)
        with serve_index(wheels) as (index_url, requests):
            for n in counts:
                for mode in ("direct", "cache"):
                    requests.clear()
                    root = Path(tmp) / f"{mode}-{n}"
                    cache = PackageCache(root / "package-cache", index_url)
                    saved = {k: os.environ.get(k) for k in ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL")}
                    os.environ["UV_INDEX_URL"] = index_url
                    if mode == "cache":
                        os.environ["UV_EXTRA_INDEX_URL"] = cache.start()
                    else:
                        os.environ.pop("UV_EXTRA_INDEX_URL", None)
                    try:
                        seconds = build_nodes(n, root, lock)
                    finally:
                        cache.close()
                        for k, v in saved.items():
                            if v is None:
                                os.environ.pop(k, None)
                            else:
                                os.environ[k] = v
                    pages, files, mb = traffic(list(requests), wheels)
                    rows.append((n, mode, pages, files, mb, seconds))
    print("| nodes | nodes ask | index: pages | index: files | index: MB | build time |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, mode, pages, files, mb, seconds in rows:
        who = "the index" if mode == "direct" else "the cache (index as fallback)"
        print(f"| {n} | {who} | {pages} | {files} | {mb:.1f} | {seconds:.1f} s |")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 4, 16])
