"""The call path and large payloads (issue 25): a warm call's round trip beside a raw socketpair's
(the floor), measured in one run; and a 320 MB numpy array there and back beside a local pickle
round trip (the CPU of each, and the first read of every page of the result), with the caller's
peak RSS once the result has been read.

Reproduce: ``python -m bench.payloads [--calls N] [--mb MB] [--runs R]`` (the endpoint needs
numpy: uv's cache, ``FLASH_UV_CACHE_DIR``, should hold it, or the index be reachable).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from bench import cases

NUMPY = "numpy==2.1.3"

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, os, pickle, resource, sys, time
    import numpy as np
    from openflash import CpuLiveServerless, remote
    from openflash.runtime import process

    MODE, CALLS, MB = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    @remote(CpuLiveServerless(name="bench-trivial"))
    def trivial(x):
        return x

    @remote(CpuLiveServerless(name="bench-payload"), dependencies=[sys.argv[4]])
    def echo(array):
        return array  # sent back: a second array as large as the argument in the caller

    def worker_cpu(pid):  # seconds of CPU (user and system) the worker used so far
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    async def warm():
        times = []
        for i in range(CALLS + 50):
            started = time.perf_counter()
            await trivial(i)
            times.append(time.perf_counter() - started)
        return times[50:]

    async def main():
        out = {}
        if MODE == "warm":  # from this script's loop: the runtime on its own thread
            await trivial(0)
            pid = process.get_runtime().pool_stats(trivial.endpoint)["pids"][0]
            cpu, worker = time.process_time(), worker_cpu(pid)
            out["hop"] = await warm()
            out["caller_cpu_us"] = (time.process_time() - cpu) / (CALLS + 50) * 1e6
            out["worker_cpu_us"] = (worker_cpu(pid) - worker) / (CALLS + 50) * 1e6
        elif MODE == "warm-loop":
            process.run_on_current_loop()  # the runtime on this loop: no thread hop
            await trivial(0)
            pid = process.get_runtime().pool_stats(trivial.endpoint)["pids"][0]
            cpu, worker = time.process_time(), worker_cpu(pid)
            out["loop"] = await warm()
            out["caller_cpu_us"] = (time.process_time() - cpu) / (CALLS + 50) * 1e6
            out["worker_cpu_us"] = (worker_cpu(pid) - worker) / (CALLS + 50) * 1e6
        else:
            await echo(np.zeros(4))  # the worker starts
            pid = process.get_runtime().pool_stats(echo.endpoint)["pids"][0]
            array = np.random.default_rng(0).standard_normal(MB * 2**20 // 8)
            base = peak_mib()
            cpu, worker = time.process_time(), worker_cpu(pid)
            started = time.perf_counter()
            result = await echo(array)
            out["round_trip"] = time.perf_counter() - started
            out["caller_cpu"] = time.process_time() - cpu
            out["worker_cpu"] = worker_cpu(pid) - worker
            assert result.shape == array.shape and result[7] == array[7] and result is not array
            started = time.perf_counter()
            assert np.array_equal(result[::512], array[::512])  # every page of it read
            out["touch"] = time.perf_counter() - started
            out["peak_mib"], out["base_mib"] = peak_mib(), base
            out["arrays_mib"] = (array.nbytes + result.nbytes) / 2**20
            del result
            cpu, started = time.process_time(), time.perf_counter()
            pickle.loads(pickle.dumps(array, protocol=5))
            out["local_pickle"] = time.perf_counter() - started
            out["local_pickle_cpu"] = time.process_time() - cpu
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def run(program: Path, home: Path, mode: str, calls: int, mb: int, src: str = "") -> dict:
    env = {**os.environ, "FLASH_HOME": str(home)}
    if src:  # another tree's openflash (``--before``), with a store of its own
        env["PYTHONPATH"] = src
    done = subprocess.run(
        [sys.executable, str(program), mode, str(calls), str(mb), NUMPY],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=320)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", default="", help="another tree's src/, measured alongside")
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="openflash-bench-payloads-"))
    bench = cases.Bench(root)  # writes its own program.py
    program = root / "payloads_program.py"
    program.write_text(PROGRAM)
    print(f"load average {os.getloadavg()}", flush=True)
    trees = {"after": ""}
    if options.before:
        trees = {"before": options.before, **trees}
    try:
        for i in range(options.runs):  # interleaved: each run measures every row once
            floor = cases.summary(cases.raw_pipe_round_trip(bench, options.calls))
            for tree, src in trees.items():
                store = root / f"home-{tree}"
                on_hop = run(program, store, "warm", options.calls, 0, src)
                hop = cases.summary(on_hop["hop"])
                on_loop = run(program, store, "warm-loop", options.calls, 0, src)
                loop = cases.summary(on_loop["loop"])
                big = run(program, store, "payload", 0, options.mb, src)
                row = {
                    "run": i + 1,
                    "tree": tree,
                    "floor_p50_us": round(floor["p50"] * 1e6, 1),
                    "hop_p50_us": round(hop["p50"] * 1e6, 1),
                    "hop_p99_us": round(hop["p99"] * 1e6, 1),
                    # CPU per call from the script's loop: the caller's process (its threads
                    # together), the worker
                    "hop_caller_cpu_us": round(on_hop["caller_cpu_us"], 1),
                    "hop_worker_cpu_us": round(on_hop["worker_cpu_us"], 1),
                    "loop_p50_us": round(loop["p50"] * 1e6, 1),
                    "loop_p99_us": round(loop["p99"] * 1e6, 1),
                    "caller_cpu_us": round(on_loop["caller_cpu_us"], 1),
                    "worker_cpu_us": round(on_loop["worker_cpu_us"], 1),
                    "round_trip_s": round(big["round_trip"], 3),
                    "local_pickle_s": round(big["local_pickle"], 3),
                    # CPU of the round trip (caller; worker, 10 ms ticks) and of the local pickle;
                    # then the first read of every page of the result (after the round trip)
                    "payload_caller_cpu_s": round(big["caller_cpu"], 3),
                    "payload_worker_cpu_s": round(big["worker_cpu"], 3),
                    "local_pickle_cpu_s": round(big["local_pickle_cpu"], 3),
                    "touch_result_s": round(big["touch"], 3),
                    "peak_mib": round(big["peak_mib"]),
                    "base_mib": round(big["base_mib"]),
                    "arrays_mib": round(big["arrays_mib"]),
                    "load": round(os.getloadavg()[0], 1),
                }
                print(json.dumps(row), flush=True)

    finally:
        bench.cleanup()  # the stores and the program


if __name__ == "__main__":
    main()
