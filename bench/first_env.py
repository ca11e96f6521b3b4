"""The first environment on a machine: uv's cache warm, the store empty (issue 25, item 5).

python -m bench.first_env [REPS] [SET]    # prints the rows for bench/RESULTS.md

Each repetition, side by side: a program with a new, empty FLASH_HOME calls a function that
imports the set (default: medium), once with ``FLASH_BYTECODE=eager`` (bytecode compiled before
the environment is published: what it was) and once with the default, ``background`` (published
when installed; the bytecode compiled afterwards by a detached process while the worker imports
from source); then, as the floor, a new environment in a store that already has the bytecode
(``new env``). Each figure is the program's time from the call to its first result. After each
background measurement its compiler is stopped (the environment removed), so that it never slows
the next one; how long the compile takes alone is measured once, in the warm-up, at
FLASH_BYTECODE_NICE=0.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench import cases
from openflash.envs.store import Store


def _wait_for_bytecode(home: Path, limit_s: float = 600) -> float | None:
    """Wait until every environment of ``home`` has its bytecode; the compiler's seconds."""
    deadline = time.monotonic() + limit_s
    seconds = None
    for env in home.glob("envs/*"):
        marker = json.loads((env / ".openflash-ready").read_text())
        if not (marker.get("bytecode") or {}).get("pending"):
            continue
        done = env / ".openflash-bytecode"
        while not done.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        if done.is_file():
            seconds = float(json.loads(done.read_text()).get("seconds", 0))
    return seconds


def main(reps: int, set_name: str) -> None:
    package_set = cases.package_sets()[set_name]
    bench = cases.Bench()
    shared = os.environ.get("OPENFLASH_TEST_UV_CACHE")
    if shared:
        bench.uv_cache = Path(shared)
    specs, imports = package_set.specs, package_set.imports
    columns: dict[str, list[float]] = {"eager": [], "background": [], "stored": [], "compile": []}
    try:
        warm = bench.root / "home-warm"
        os.environ["FLASH_BYTECODE_NICE"] = "0"  # bench.environ copies os.environ
        bench.run(warm, specs, 1, imports=imports)  # uv's cache and the index seen
        compiled = _wait_for_bytecode(warm)
        if compiled is not None:
            columns["compile"].append(compiled)
        os.environ.pop("FLASH_BYTECODE_NICE")
        for rep in range(reps):
            for mode in ("eager", "background"):
                home = bench.root / f"home-{mode}-{rep}"
                os.environ["FLASH_BYTECODE"] = mode
                columns[mode].append(bench.run(home, specs, 1, imports=imports)[0])
                store = Store(home)
                for entry in store.entries("envs"):
                    store.remove("envs", entry.key)  # stops its compiler
                if mode == "eager":
                    bench.forget_environments(home)  # its bytecode stays: the floor's store
                    columns["stored"].append(bench.run(home, specs, 1, imports=imports)[0])
                shutil.rmtree(home, ignore_errors=True)
            os.environ.pop("FLASH_BYTECODE", None)
    finally:
        bench.cleanup()
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {reps} repetitions")
    print(f"| {set_name} set, first result | n | p50 | min | max |")
    print("| --- | --- | --- | --- | --- |")
    for key, label in (
        ("eager", "first environment, bytecode compiled before publishing (before)"),
        ("background", "first environment, bytecode compiled in the background (now)"),
        ("stored", "new environment, bytecode already stored (floor)"),
        ("compile", "the compiler alone, FLASH_BYTECODE_NICE=0 (the warm-up; not waited for)"),
    ):
        times = columns[key]
        if times:
            print(
                f"| {label} | {len(times)} | {statistics.median(times):.2f} s | "
                f"{min(times):.2f} s | {max(times):.2f} s |"
            )


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 3, sys.argv[2] if len(sys.argv) > 2 else "medium"
    )
