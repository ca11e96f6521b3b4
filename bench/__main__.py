"""``python -m bench``: run the cases, print a table, write bench/RESULTS.md.

python -m bench                      # every case, default repetitions
python -m bench --cases warm --reps 5000
python -m bench --no-write           # print only
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import uv

import openflash
from bench import cases, http, ray_compare

CASES: dict[str, tuple[str, Callable[[cases.Bench, int], list[float]], int, float | None]] = {
    # name: (row label, function, default repetitions, target for the p50 in seconds)
    "cold": (
        "cold start, no dependencies (fresh pool, environment ready)",
        cases.cold_start_no_dependencies,
        15,
        0.3,
    ),
    "small": (
        "first call, new small environment (warm package cache)",
        cases.new_small_environment,
        5,
        None,
    ),
    "ffmpeg-new": (
        'first call, system_dependencies=["ffmpeg"], empty layer store (warm .deb cache)',
        cases.new_ffmpeg_layer,
        3,
        None,
    ),
    "ffmpeg-cold": (
        'cold start, system_dependencies=["ffmpeg"], layer built',
        cases.cold_start_ffmpeg_layer,
        15,
        None,
    ),
    "warm": ("warm call round trip from Python", cases.warm_call_round_trip, 2000, 0.0005),
    "pipe": (
        "raw socketpair round trip (the floor, for comparison)",
        cases.raw_pipe_round_trip,
        2000,
        None,
    ),
}

#: What a built system layer may add to a no-dependency cold start.
LAYER_OVERHEAD_TARGET = 0.2

#: Cold start times the user guide publishes for Runpod Flash, for comparison.
PUBLISHED = {"cold": "~5-10 s (no dependencies)", "small": "~15-30 s (1-2 packages)"}

#: The dev server's throughput on a trivial queue route, as a share of a bare FastAPI app's.
HTTP_RATIO_TARGET = 0.5

RESULTS = Path(__file__).with_name("RESULTS.md")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cases",
        default=",".join([*CASES, "http", "ray"]),
        help="comma-separated: " + ", ".join([*CASES, "http", "ray"]),
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions per case")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CASES and c not in ("http", "ray")]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")

    bench = cases.Bench()
    rows = []
    http_results = None
    ray_results = None
    try:
        if "http" in chosen:
            print("running http: flash run against a bare FastAPI app ...", file=sys.stderr)
            http_results = http.compare(bench.root, bench.environ(bench.root / "home-http"))
        if "ray" in chosen:
            print("running ray: the Ray backend against Ray's runtime_env uv ...", file=sys.stderr)
            ray_results = ray_compare.compare(bench, args.reps or 3)
        for name in [c for c in chosen if c not in ("http", "ray")]:
            label, run, reps, target = CASES[name]
            print(f"running {name}: {label} ...", file=sys.stderr, flush=True)
            stats = cases.summary(run(bench, args.reps or reps))
            verdict = "" if target is None else ("meets" if stats["p50"] <= target else "misses")
            rows.append((name, label, stats, target, verdict))
    finally:
        bench.cleanup()

    table = [
        "| case | n | p50 | p99 | target (p50) | | user guide, Runpod Flash |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, label, stats, target, verdict in rows:
        goal = f"<= {_ms(target)}" if target else ""
        table.append(
            f"| {label} | {stats['n']} | {_ms(stats['p50'])} | {_ms(stats['p99'])} | "
            f"{goal} | {verdict} | {PUBLISHED.get(name, '')} |"
        )
    by_name = {name: stats for name, _label, stats, _target, _verdict in rows}
    if "cold" in by_name and "ffmpeg-cold" in by_name:
        extra = by_name["ffmpeg-cold"]["p50"] - by_name["cold"]["p50"]
        verdict = "meets" if extra <= LAYER_OVERHEAD_TARGET else "misses"
        table += [
            "",
            f"The ffmpeg layer adds {_ms(extra)} to a cold start (p50 against p50; target "
            f"<= {_ms(LAYER_OVERHEAD_TARGET)}: {verdict}).",
        ]
    if http_results is not None:
        table += _http_table(http_results)
    if ray_results is not None:
        table += _ray_table(ray_results)
    print("\n".join(table))
    if not args.no_write:
        RESULTS.write_text(_report(table, chosen))
        print(f"wrote {RESULTS}", file=sys.stderr)


def _http_table(results: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        "",
        "| HTTP `POST /echo/runsync`, 32 concurrent clients, 5 s | requests/s | p50 | p99 |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['rps']:.0f} | {_ms(r['p50'])} | {_ms(r['p99'])} |")
    ratio = results["openflash"]["rps"] / results["bare FastAPI"]["rps"]
    verdict = "meets" if ratio >= HTTP_RATIO_TARGET else "misses"
    lines += [
        "",
        f"`flash run` serves {ratio:.2f} of the bare app's throughput (target >= "
        f"{HTTP_RATIO_TARGET}: {verdict}).",
    ]
    return lines


def _ray_table(results: dict[str, object]) -> list[str]:
    ours = cases.summary(results["openflash"])  # type: ignore[arg-type]
    theirs = cases.summary(results["ray"])  # type: ignore[arg-type]
    floor = cases.summary(results["floor"])  # type: ignore[arg-type]
    ours_disk, ray_disk = int(results["openflash_disk"]), int(results["ray_disk"])  # type: ignore[call-overload]
    speed = theirs["p50"] / ours["p50"]
    space = ray_disk / max(ours_disk, 1)
    return [
        "",
        "| Ray, first call with a new environment (small set) | n | p50 | p99 | extra disk |",
        "| --- | --- | --- | --- | --- |",
        f"| openflash Ray backend (node store, py_executable) | {ours['n']} | {_ms(ours['p50'])} | "
        f"{_ms(ours['p99'])} | {ours_disk / 2**20:.1f} MiB |",
        f'| Ray `runtime_env={{"uv": [...]}}` | {theirs["n"]} | {_ms(theirs["p50"])} | '
        f"{_ms(theirs['p99'])} | {ray_disk / 2**20:.1f} MiB |",
        f"| Ray starting an actor with a runtime_env of its own, no packages (the floor) | "
        f"{floor['n']} | {_ms(floor['p50'])} | {_ms(floor['p99'])} | |",
        "",
        f"First call {speed:.1f}x faster (target >= 3x: {'meets' if speed >= 3 else 'misses'}); "
        f"{space:.0f}x less disk per extra environment (target >= 20x: "
        f"{'meets' if space >= 20 else 'misses'}).",
    ]


def _report(table: list[str], chosen: list[str]) -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"Measured {datetime.date.today().isoformat()} with `python -m bench --cases "
            f"{','.join(chosen)}`, openflash {openflash.__version__}, uv {_uv_version()}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
            f"{cpus} CPUs.",
            "",
            "Each figure is the time a user program waits, from calling the function to its",
            "result, in a separate process with a store of its own; medians and p99 over the",
            "repetitions.",
            "",
            *table,
            "",
            "- *cold start*: a new process calls a function with no dependencies; its",
            "  environment and resolution are cached, no worker runs (start the runtime, spawn",
            "  the worker, call).",
            "- *new small environment*: an empty store with a warm uv cache; the first call",
            "  resolves `" + "`, `".join(cases.SMALL_SET) + "` with uv,",
            "  builds the environment (hardlinks, bytecode), starts a worker and calls.",
            "- *ffmpeg, empty layer store*: apt's index and .deb cache warm; the first call",
            "  resolves ffmpeg's closure against this machine's packages, extracts it into a",
            "  layer, fixes it up (library paths, alternatives), starts a worker and calls.",
            "- *ffmpeg, layer built*: as the no-dependency cold start, with the layer's variables.",
            "- *warm call*: a trivial call to a running worker, awaited from Python.",
            "- *raw socketpair*: 16 bytes there and back to a bare Python process; the floor.",
            "- *Ray*: a one-node Ray cluster; a new driver process calls a function needing the",
            "  small set in an environment that does not exist yet (openflash: removed from the",
            "  node's store; Ray: the same packages spelt anew, so that its cache misses).",
            "  Disk: the blocks an environment adds beyond the node's shared caches (uv's and",
            "  the bytecode store, hardlinked from), against Ray's per-environment folder (Ray",
            "  installs with `uv pip install --no-cache` by default, so its files are copies).",
            "  The floor: a new driver starting an empty actor whose runtime_env sets one",
            "  variable; both systems pay at least this for an actor in a new environment.",
            "- *HTTP*: `flash run` serving a trivial async function (one worker, max_concurrency",
            "  32) against a bare FastAPI app answering the same JSON in its handler, both under",
            "  uvicorn, driven in turn by one client process with 32 keep-alive connections.",
            "",
            "Reproduce: `pip install -e '.[bench]' && python -m bench` (about five minutes).",
            "",
        ]
    )


def _uv_version() -> str:
    import subprocess

    done = subprocess.run([uv.find_uv_bin(), "--version"], capture_output=True, text=True)
    return done.stdout.split()[1] if done.returncode == 0 else "?"


if __name__ == "__main__":
    main()
