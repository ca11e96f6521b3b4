"""Spawned against forked workers: a new worker's first result, a burst of eight, their memory.

One program per (set, mode): it calls once (the pool's first worker; with fork, its template
starts and imports the set), keeps that worker busy and calls again, so that a *new* worker must
start: the time to that call's result is the cold start of a scaled-up worker, spawned (a new
interpreter imports the set) or forked (from the template that already has). Then a burst of
eight concurrent calls scales the pool to eight workers; their PSS (proportional set size, from
/proc/PID/smaps_rollup) is summed, so pages forked workers share with their template count once.
The program names the set in ``preload=[...]``: it imports it by name, which reading its code
cannot see.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from bench import cases

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from openflash import CpuLiveServerless, remote

    DEPS, IMPORTS = json.loads(sys.argv[1]), json.loads(sys.argv[2])

    # The set is imported by name (one program for every set), which reading the code cannot see:
    # preload names it, as a user would for imports made that way.
    @remote(CpuLiveServerless(name="bench-templates", workersMax=9), dependencies=DEPS,
            preload=IMPORTS)
    async def work(modules, hold):
        import asyncio, importlib, os
        for name in modules:
            importlib.import_module(name)
        await asyncio.sleep(hold)
        return os.getpid()

    def pss(pid):
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("Pss:"))

    async def main():
        await work(IMPORTS, 0)
        busy = asyncio.ensure_future(work(IMPORTS, 3.0))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        await work(IMPORTS, 0)
        scale_up = time.perf_counter() - started
        await busy
        started = time.perf_counter()
        pids = await asyncio.gather(*(work(IMPORTS, 1.0) for _ in range(8)))
        burst = time.perf_counter() - started - 1.0
        memory = sum(pss(pid) for pid in set(pids))
        print(json.dumps({"scale_up": scale_up, "burst": burst, "pss": memory,
                          "workers": len(set(pids))}))

    asyncio.run(main())
    """
)


def run(bench: cases.Bench, sets: list[cases.PackageSet], reps: int) -> dict[str, dict]:
    """Per set and mode (spawn, fork): lists of scale-up seconds, burst seconds, PSS bytes."""
    program = bench.root / "templates_program.py"
    program.write_text(PROGRAM)
    results: dict[str, dict] = {}
    for s in sets:
        home = bench.root / f"home-templates-{s.name}"
        bench.run(home, s.specs, 1, imports=s.imports)  # the environment exists
        cell = results[s.name] = {
            mode: {"scale_up": [], "burst": [], "pss": []} for mode in ("spawn", "fork")
        }
        for _ in range(reps):
            for mode in ("spawn", "fork"):
                env = {**bench.environ(home), "FLASH_FORK": "1" if mode == "fork" else "0"}
                done = subprocess.run(
                    [sys.executable, str(program), json.dumps(s.specs), json.dumps(s.imports)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"the templates program failed:\n{done.stderr[-3000:]}")
                found = json.loads(done.stdout.strip().splitlines()[-1])
                for key in ("scale_up", "burst", "pss"):
                    cell[mode][key].append(found[key])
    return results
