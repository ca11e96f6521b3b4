"""The user guide's cold start table, measured: every package set, openflash and its peers.

For each set (none, small, medium, large), in one run, repetitions interleaved so that a noisy
moment hits every column alike:

- *new env*: the store has no environment and no cached resolution for the set, the package
  caches are warm (uv's, and the store's bytecode, both keyed by package content: what a machine
  has after any earlier environment used these packages); resolve, build, start, import, call.
- *new env, empty FLASH_HOME*: as *new env* but with a store that has never compiled these
  packages' bytecode (uv's cache still warm).
- *cold pool*: the environment exists, no worker runs.
- *pip*, *Ray*, *plain process*: see :mod:`bench.peers`.

The function imports the set's modules and returns, so every column includes importing them.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack

from bench import cases, peers, raycluster

COLUMNS = ["new", "fresh", "cold", "pip", "ray", "floor"]


def run(
    bench: cases.Bench, sets: list[cases.PackageSet], reps: int, *, with_ray: bool
) -> dict[str, dict[str, list[float]]]:
    """Seconds to the first result, per set and column (``ray`` only with ``with_ray``)."""
    results: dict[str, dict[str, list[float]]] = {s.name: {c: [] for c in COLUMNS} for s in sets}
    pip_env = peers.pip_environ(bench.root / "pip-cache")
    ray_program = bench.root / "ray_uv_program.py"
    ray_program.write_text(peers.RAY_PROGRAM)
    with ExitStack() as stack:
        address = None
        if with_ray:
            address = stack.enter_context(
                raycluster.local_cluster(bench.root / "ray-peer", bench.environ(bench.root))
            )
        pythons = {}
        for s in sets:  # warm every cache once: uv's, the bytecode store, pip's, Ray's workers
            home = bench.root / f"home-{s.name}"
            pythons[s.name] = bench.run_program(home, s.specs, 1, imports=s.imports)["python"]
            peers.pip_first_call(bench.root / f"venv-{s.name}-warm", s.specs, s.imports, pip_env)
        if address:  # Ray's first worker on a new cluster pays more than any later one
            peers.ray_first_call(ray_program, address, [], [], -1, bench.environ(bench.root))
        for rep in range(reps):
            for s in sets:
                cell = results[s.name]
                home = bench.root / f"home-{s.name}"
                bench.forget_environments(home)
                cell["new"].append(bench.run(home, s.specs, 1, imports=s.imports)[0])
                cell["cold"].append(bench.run(home, s.specs, 1, imports=s.imports)[0])
                fresh = bench.root / f"home-{s.name}-fresh-{rep}"
                cell["fresh"].append(bench.run(fresh, s.specs, 1, imports=s.imports)[0])
                shutil.rmtree(fresh, ignore_errors=True)
                cell["floor"].append(peers.plain_process_call(pythons[s.name], s.imports, pip_env))
                venv = bench.root / f"venv-{s.name}-{rep}"
                cell["pip"].append(peers.pip_first_call(venv, s.specs, s.imports, pip_env))
                shutil.rmtree(venv, ignore_errors=True)
                if address:
                    cell["ray"].append(
                        peers.ray_first_call(
                            ray_program, address, s.specs, s.imports, rep, bench.environ(home)
                        )
                    )
    return results
