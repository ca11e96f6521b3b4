"""System layers with the unpacked-deb store: the first ffmpeg layer's time (its .debs already
downloaded) and what a second layer, ffmpeg plus libzbar0, adds in disk and time.

Run: APT_DIR=<apt's private folder> python -m bench.layers (prints the figures bench/RESULTS.md
records: wall time, and CPU time of this process and its children, steadier on a shared
machine)."""

import os
import resource
import tempfile
import time
from pathlib import Path

from openflash.deps.apt import Apt
from openflash.deps.system import build_layer, resolve_system
from openflash.envs.store import Store

apt = Apt(Path(os.environ["APT_DIR"]), Path("/var/lib/dpkg/status"), index_ttl=86400)


def cpu():
    return sum(
        r.ru_utime + r.ru_stime
        for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def du(p):
    seen = set()
    n = 0
    for d, _, fs in os.walk(p):
        for f in fs:
            st = os.lstat(os.path.join(d, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                n += st.st_blocks * 512
    return n


with tempfile.TemporaryDirectory(dir="/tmp") as t:
    store = Store(Path(t))
    l1 = resolve_system(("ffmpeg",), store=store, apt=apt, ttl=3600)
    l2 = resolve_system(("ffmpeg", "libzbar0"), store=store, apt=apt, ttl=3600)
    with apt.locked():
        apt.download(l1.packages)
        apt.download(l2.packages)  # warm .debs
    t0, c0 = time.monotonic(), cpu()
    build_layer(store, l1, apt, real_paths=True)
    t1, c1 = time.monotonic(), cpu()
    before = du(t)
    t2, c2 = time.monotonic(), cpu()
    build_layer(store, l2, apt, real_paths=True)
    t3, c3 = time.monotonic(), cpu()
    after = du(t)
    print(f"packages {len(l1.packages)} / {len(l2.packages)}, load {os.getloadavg()[0]:.1f}")
    print(
        f"first ffmpeg layer: {t1 - t0:.2f} s (CPU {c1 - c0:.2f} s), store {before / 2**20:.1f} MiB"
    )
    print(
        f"second layer ffmpeg+libzbar0: {t3 - t2:.2f} s (CPU {c3 - c2:.2f} s), "
        f"new disk {(after - before) / 2**20:.1f} MiB"
    )
