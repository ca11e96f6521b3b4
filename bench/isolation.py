"""What worker isolation costs: the memory cap's watchdog per sample (backends/memory_cap.py),
and the namespace launcher with a PID namespace against without (workers/namespace.py).

Run: python -m bench.isolation (prints the figures bench/RESULTS.md records: medians of wall
time, and CPU time per sample for the watchdog, steadier on a shared machine)."""

import json
import os
import statistics
import subprocess
import sys
import time

from openflash.backends.memory_cap import measure
from openflash.workers import namespace

#: A tree: a parent holding 100 MiB and two children holding 100 MiB each.
TREE = """
import subprocess, sys, time
code = ("b = bytearray(100 << 20); b[::4096] = b'x' * len(b[::4096]); print(1, flush=True);"
        " import time; time.sleep(600)")
kids = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(2)]
for k in kids: k.stdout.readline()
b = bytearray(100 << 20); b[::4096] = b"x" * len(b[::4096])
print(1, flush=True); time.sleep(600)
"""


def watchdog() -> None:
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    try:
        walls, cpus, bound_walls, bound_cpus = [], [], [], []
        for _ in range(200):
            wall, cpu = time.perf_counter(), time.process_time()
            used = measure(proc.pid)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            wall, cpu = time.perf_counter(), time.process_time()
            measure(proc.pid, 1 << 40)  # under a cap: the resident sets' bound suffices
            bound_walls.append(time.perf_counter() - wall)
            bound_cpus.append(time.process_time() - cpu)
        print(
            f"watchdog sample, tree of {used.processes} processes, {used.total >> 20} MiB, "
            f"{len(os.listdir('/proc'))} /proc entries: wall p50 "
            f"{statistics.median(walls) * 1000:.2f} ms, "
            f"CPU p50 {statistics.median(cpus) * 1000:.2f} ms (at one sample per 0.2 s: "
            f"{statistics.median(cpus) / 0.2 * 100:.1f}% of a CPU); under the cap (resident "
            f"sets' bound): wall p50 {statistics.median(bound_walls) * 1000:.2f} ms, CPU p50 "
            f"{statistics.median(bound_cpus) * 1000:.2f} ms "
            f"({statistics.median(bound_cpus) / 0.2 * 100:.1f}% of a CPU)"
        )
    finally:
        proc.kill()
        proc.wait()


def launcher() -> None:
    for pid in (False, True, False, True):
        runs = []
        config = json.dumps({"layer": None, "volume": None, "root": None, "pid": pid})
        env = {**os.environ, namespace.NAMESPACE_VARIABLE: config}
        argv = [sys.executable, "-I", "-S", namespace.__file__, "--exec", "true"]
        for _ in range(20):
            started = time.perf_counter()
            subprocess.run(argv, env=env, check=True)
            runs.append(time.perf_counter() - started)
        label = "with a PID namespace" if pid else "user and mount only"
        print(f"launcher to `true`, {label}: p50 {statistics.median(runs) * 1000:.1f} ms")


if __name__ == "__main__":
    with open("/proc/loadavg") as f:
        print("load:", f.read().strip())
    watchdog()
    launcher()
