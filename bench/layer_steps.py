"""Where the first ffmpeg layer's time goes: bench.layers' first layer, each step of
``deps.system.build_layer`` timed (wall and CPU of this process and its children).

Run: APT_DIR=<apt's private folder> python -m bench.layer_steps [ROUNDS] (its .debs must be in
the folder's cache, as bench.layers leaves them). Prints one line per step and round; "other"
is what the listed steps leave of the whole (the store's lock and record, the layer's info)."""

import functools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from openflash.deps import deb_store, system
from openflash.deps.apt import Apt
from openflash.envs.store import Store


def cpu() -> float:
    return sum(
        r.ru_utime + r.ru_stime
        for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


spent: dict[str, list[float]] = {}
labels: list[str] = []  # in the order printed


def timed(module: object, name: str, label: str) -> None:
    real = getattr(module, name)
    labels.append(label)

    @functools.wraps(real)
    def wrapper(*args: object, **kwargs: object) -> object:
        w, c = time.monotonic(), cpu()
        try:
            return real(*args, **kwargs)
        finally:
            total = spent.setdefault(label, [0.0, 0.0])
            total[0] += time.monotonic() - w
            total[1] += cpu() - c

    setattr(module, name, wrapper)


timed(Apt, "download_verified", "the .debs checked (apt-cache show, sha256)")
timed(system, "unpack_all", "unpack (hash, decompress, write)")
timed(deb_store, "_digest", "  of which: sha256 of the .debs")
timed(system, "assemble", "assemble (cp -al)")
timed(system, "_merge_usr", "merge /usr")
timed(system, "_fix_up", "fix-ups")
timed(system, "_ld_cache", "ld.so.cache (ldconfig in the namespace)")
timed(system, "run_triggers", "triggers")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    apt = Apt(Path(os.environ["APT_DIR"]), Path("/var/lib/dpkg/status"), index_ttl=86400)
    for r in range(rounds):
        spent.clear()
        with tempfile.TemporaryDirectory(dir="/tmp") as t:
            store = Store(Path(t))
            lock = system.resolve_system(("ffmpeg",), store=store, apt=apt, ttl=3600)
            with apt.locked():
                apt.download(lock.packages)
            spent.clear()
            w, c = time.monotonic(), cpu()
            system.build_layer(store, lock, apt, real_paths=True)
            w, c = time.monotonic() - w, cpu() - c
        load = os.getloadavg()[0]
        print(f"round {r + 1}: whole layer {w:.2f} s (CPU {c:.2f} s), load {load:.1f}")
        steps = [v for k, v in spent.items() if not k.startswith(" ")]
        spent["other"] = [w - sum(s[0] for s in steps), c - sum(s[1] for s in steps)]
        for label in [*labels, "other"]:
            sw, sc = spent.get(label, [0.0, 0.0])
            print(f"  {label:42} {sw:5.2f} s (CPU {sc:5.2f} s)")


if __name__ == "__main__":
    main()
