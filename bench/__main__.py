"""``python -m bench``: run the cases, print the tables, write bench/RESULTS.md.

python -m bench                                  # every case, default repetitions
python -m bench --cases coldstart --sets none,small --reps 5
python -m bench --cases warm,http --no-write     # print only
python -m bench --cases http --http-before /tmp/main-src --reps 3   # against another tree

Every figure is a median (p50) and p99 over repetitions, all measured in this one run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import uv

import openflash
from bench import cases, coldstart, footprint, http, ray_compare, raycluster, scale, templates

#: Case name -> what it measures (for --help and the report).
CASES = {
    "coldstart": "the cold start table: per package set, openflash against pip, Ray, the floor",
    "warm": "warm call round trip from Python, and its floors",
    "ffmpeg": "system_dependencies=['ffmpeg']: a new layer, and a cold start with it built",
    "imports": "import time and disk of a built environment, against a pip venv",
    "scale": "twenty endpoints with twenty different small sets, called at once",
    "templates": "a scaled-up worker's first result and a burst of eight, spawned vs forked",
    "http": "flash run against a bare FastAPI app: throughput and single-caller round trip",
    "ray": "the Ray backend against Ray's own runtime_env uv",
}

#: Targets (seconds, ratios, bytes), from the benchmarks issue.
NEW_ENV_TARGET = {"small": 1.0, "medium": 2.0, "large": 5.0}
COLD_POOL_NONE_TARGET = 0.15
PIP_RATIO_TARGET = 5.0
RAY_RATIO_TARGET = 3.0
WARM_CALL_TARGET = 0.0003
EXTRA_ENV_TARGET = 5_000_000
IMPORT_RATIO_TARGET = 1.1
LAYER_OVERHEAD_TARGET = 0.2
HTTP_RATIO_TARGET = 0.9
HTTP_P99_TARGET = 2.0
RAY_BACKEND_SPEED_TARGET = 3.0
RAY_BACKEND_DISK_TARGET = 20.0

RESULTS = Path(__file__).with_name("RESULTS.md")


def _ms(seconds: float) -> str:
    if seconds < 0.0001:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 0.01:
        return f"{seconds * 1000:.3f} ms"
    if seconds < 10:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def _mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def _verdict(ok: bool) -> str:
    return "meets" if ok else "**misses**"


def _cell(times: list[float]) -> str:
    if not times:
        return "-"
    stats = cases.summary(times)
    return f"{_ms(stats['p50'])} ({_ms(stats['p99'])})"


def _p50(times: list[float]) -> float:
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="cases:\n" + "\n".join(f"  {k:10} {v}" for k, v in CASES.items()),
    )
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument(
        "--sets",
        default="none,small,medium,large",
        help="the package sets of the coldstart case (large needs a CPU torch wheel: "
        "BENCH_TORCH, or one in /opt/wheels)",
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions for every case")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    parser.add_argument(
        "--http-before",
        type=Path,
        default=None,
        help="the http case also serves with this folder's openflash package first on "
        "PYTHONPATH (another tree's src/), in turn with the others, --reps rounds",
    )
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    available = cases.package_sets()
    wanted = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in wanted if s not in ("none", "small", "medium", "large")]
    if bad:
        parser.error(f"unknown set(s) {bad}; choose from none, small, medium, large")
    notes = []
    if "large" in wanted and "large" not in available:
        notes.append(
            "The large set was skipped: no CPU torch wheel (set BENCH_TORCH to a wheel file or "
            "a requirement)."
        )
    sets = [available[s] for s in wanted if s in available]
    ray_missing = raycluster.available()
    if ray_missing:
        notes.append(f"Ray columns skipped: the comparison {ray_missing}.")

    def reps(default: int) -> int:
        return args.reps or default

    def step(name: str, run: Callable[[], object]) -> object:
        print(f"running {name}: {CASES.get(name, name)} ...", file=sys.stderr, flush=True)
        return run()

    bench = cases.Bench()
    sections: list[str] = []
    try:
        cold = None
        if "coldstart" in chosen:
            cold = step(
                "coldstart",
                lambda: coldstart.run(bench, sets, reps(3), with_ray=not ray_missing),
            )
            sections += _coldstart_tables(cold, sets, with_ray=not ray_missing)  # type: ignore[arg-type]
        if "warm" in chosen:
            warm = {
                "python": cases.warm_call_round_trip(bench, reps(2000)),
                "pipe": cases.raw_pipe_round_trip(bench, reps(2000)),
                "in_process": cases.in_process_call(bench, reps(2000)),
            }
            sections += _warm_table(warm)
        if "ffmpeg" in chosen:
            layer = {
                "new": step("ffmpeg", lambda: cases.new_ffmpeg_layer(bench, reps(3))),
                "cold": cases.cold_start_ffmpeg_layer(bench, reps(15)),
            }
            none_cold = cold["none"]["cold"] if cold and "none" in cold else None  # type: ignore[index]
            sections += _ffmpeg_table(layer, none_cold)  # type: ignore[arg-type]
        if "imports" in chosen and "medium" in available:
            found = step("imports", lambda: footprint.run(bench, available["medium"], reps(10)))
            sections += _footprint_table(found)  # type: ignore[arg-type]
        if "templates" in chosen:
            chosen_sets = [available[n] for n in ("medium", "large") if n in available]
            found = step("templates", lambda: templates.run(bench, chosen_sets, reps(3)))
            sections += _templates_table(found)  # type: ignore[arg-type]
        if "scale" in chosen:
            sections += _scale_table(step("scale", lambda: scale.run(bench, reps(3))))  # type: ignore[arg-type]
        if "http" in chosen:
            results = step(
                "http",
                lambda: http.compare(
                    bench.root,
                    bench.environ(bench.root / "home-http"),
                    before=args.http_before,
                    rounds=reps(1),
                ),
            )
            sections += _http_table(results)  # type: ignore[arg-type]
        if "ray" in chosen and not ray_missing:
            sections += _ray_table(step("ray", lambda: ray_compare.compare(bench, reps(3))))  # type: ignore[arg-type]
    finally:
        bench.cleanup()

    sections += [f"\n{note}" for note in notes]
    print("\n".join(sections))
    if not args.no_write:
        RESULTS.write_text(_report(sections, argv if argv is not None else sys.argv[1:]))
        print(f"wrote {RESULTS}", file=sys.stderr)


def _coldstart_tables(
    results: dict[str, dict[str, list[float]]], sets: list[cases.PackageSet], *, with_ray: bool
) -> list[str]:
    lines = [
        "",
        "## Cold starts: time to the first result",
        "",
        "p50 (p99) over the repetitions; the function imports the set's modules, then returns.",
        "",
        "| set | openflash, new env | new env, empty FLASH_HOME | openflash, cold pool | "
        "pip worker (a) | Ray uv (b) | plain process (c, floor) | user guide, Runpod Flash |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in sets:
        r = results[s.name]
        lines.append(
            f"| {s.name} | {_cell(r['new'])} | {_cell(r['fresh'])} | {_cell(r['cold'])} | "
            f"{_cell(r['pip'])} | {_cell(r['ray'])} | {_cell(r['floor'])} | {s.published} |"
        )
    lines += [
        "",
        "| set | new env p50 | target | | pip / openflash | target >= 5x | | "
        "Ray / openflash | target >= 3x | |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in sets:
        r = results[s.name]
        new = _p50(r["new"])
        target = NEW_ENV_TARGET.get(s.name)
        pip = _p50(r["pip"]) / new
        # The targets are for sets with packages; the empty set's ratios are shown for scale.
        row = [
            s.name,
            _ms(new),
            f"<= {_ms(target)}" if target else "",
            _verdict(new <= target) if target else "",
            f"{pip:.1f}x",
            "",
            _verdict(pip >= PIP_RATIO_TARGET) if target else "",
        ]
        if with_ray and r["ray"]:
            ray = _p50(r["ray"]) / new
            row += [f"{ray:.1f}x", "", _verdict(ray >= RAY_RATIO_TARGET) if target else ""]
        else:
            row += ["-", "", ""]
        lines.append("| " + " | ".join(row) + " |")
    if "none" in results:
        cold = _p50(results["none"]["cold"])
        lines += [
            "",
            f"No dependencies, cold pool: {_ms(cold)} p50 (target <= "
            f"{_ms(COLD_POOL_NONE_TARGET)}: {_verdict(cold <= COLD_POOL_NONE_TARGET)}).",
        ]
    lines += [
        "",
        "- *new env*: no environment and no cached resolution for the set; the package caches",
        "  warm (uv's, and the store's bytecode, both keyed by package content: what a machine",
        "  has once any environment used these packages). Resolve with uv (from its cache:",
        "  the warm-up asked the index about these packages less than FLASH_RESOLVE_TTL ago),",
        "  build (hardlinks), start a worker, import, call.",
        "- *new env, empty FLASH_HOME*: the same with a store that never compiled these",
        "  packages' bytecode (uv's cache still warm): the first environment to use them.",
        "- *cold pool*: the environment exists; no worker runs.",
        "- *(a) pip worker*: what a worker that installs on cold start pays: a new virtualenv,",
        "  `pip install` of the set (pip's cache warm; pip compiles bytecode as it installs),",
        "  then a new interpreter imports the set and calls.",
        "- *(b) Ray uv*: `runtime_env={'uv': [...]}` on a task from a new driver, Ray's defaults",
        "  (uv with `--no-cache`), made to miss Ray's environment cache with a no-op uv option;",
        "  for the empty set a runtime_env that only sets a variable (a new worker process).",
        "- *(c) plain process*: a new interpreter that already has the set imports it and",
        "  calls: no pool, no protocol; what no system can beat.",
    ]
    return lines


def _warm_table(warm: dict[str, list[float]]) -> list[str]:
    python = cases.summary(warm["python"])
    return [
        "",
        "## Warm calls",
        "",
        "| round trip of a trivial call | n | p50 | p99 |",
        "| --- | --- | --- | --- |",
        f"| openflash, from Python, to a running worker | {python['n']} | {_ms(python['p50'])} | "
        f"{_ms(python['p99'])} |",
        *(
            f"| {label} | {s['n']} | {_ms(s['p50'])} | {_ms(s['p99'])} |"
            for label, s in (
                ("raw socketpair to a bare Python process (floor)", cases.summary(warm["pipe"])),
                ("plain in-process call (floor)", cases.summary(warm["in_process"])),
            )
        ),
        "",
        f"Warm call from Python: {_ms(python['p50'])} p50 (target <= {_ms(WARM_CALL_TARGET)}: "
        f"{_verdict(python['p50'] <= WARM_CALL_TARGET)}). Over HTTP: see the HTTP table.",
    ]


def _ffmpeg_table(layer: dict[str, list[float]], none_cold: list[float] | None) -> list[str]:
    lines = [
        "",
        "## System dependencies",
        "",
        "| system_dependencies=['ffmpeg'] | p50 (p99) |",
        "| --- | --- |",
        f"| first call, empty layer store (apt's index and .debs warm) | {_cell(layer['new'])} |",
        f"| cold start, layer built | {_cell(layer['cold'])} |",
    ]
    if none_cold:
        extra = _p50(layer["cold"]) - _p50(none_cold)
        lines += [
            "",
            f"The layer adds {_ms(max(extra, 0))} to a cold start (against the none set's cold "
            f"pool; target <= {_ms(LAYER_OVERHEAD_TARGET)}: "
            f"{_verdict(extra <= LAYER_OVERHEAD_TARGET)}).",
        ]
    return lines


def _footprint_table(found: dict[str, object]) -> list[str]:
    ours, pip = found["import_openflash"], found["import_pip"]
    ratio = float(found["ratio"])  # type: ignore[arg-type]
    extra = int(found["extra_env_bytes"])  # type: ignore[call-overload]
    return [
        "",
        "## A built environment: import time and disk (medium set)",
        "",
        "| | p50 (p99) |",
        "| --- | --- |",
        f"| import pandas, numpy, scipy, matplotlib: openflash environment | {_cell(ours)} |",  # type: ignore[arg-type]
        f"| the same in a pip-built virtualenv | {_cell(pip)} |",  # type: ignore[arg-type]
        "",
        f"Import time ratio {ratio:.2f} (target <= {IMPORT_RATIO_TARGET}: "
        f"{_verdict(ratio <= IMPORT_RATIO_TARGET)}).",
        "",
        f"A second environment sharing the medium set's packages (the set plus "
        f"`{', '.join(footprint.EXTRA)}`) adds {_mib(extra)} of disk, hardlinks counted once "
        f"(target <= {EXTRA_ENV_TARGET / 1e6:.0f} MB: {_verdict(extra <= EXTRA_ENV_TARGET)}); "
        f"a pip venv of the set takes {_mib(float(found['pip_venv_bytes']))}, "  # type: ignore[arg-type]
        f"and the openflash environment's files, were they copies, "
        f"{_mib(float(found['first_env_alone_bytes']))}.",  # type: ignore[arg-type]
    ]


#: A forked worker's first result, once its template exists (torch), and the PSS comparison.
FORK_FIRST_RESULT_TARGET = 0.1


def _templates_table(found: dict[str, dict]) -> list[str]:
    lines = [
        "",
        "## Worker templates: spawned against forked workers",
        "",
        "A pool with one busy worker gets a call: the time to its result is a new worker's cold",
        "start (the environment exists; with fork, its template too). Then eight calls at once",
        "(each holding its worker 1 s) scale the pool to eight workers: how long the burst took",
        "beyond that second, and the eight workers' PSS summed.",
        "",
        "| set | new worker's first result: spawn | fork | burst of 8: spawn | fork | "
        "PSS of 8 workers: spawn | fork |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, cell in found.items():
        spawn, fork = cell["spawn"], cell["fork"]
        lines.append(
            f"| {name} | {_cell(spawn['scale_up'])} | {_cell(fork['scale_up'])} | "
            f"{_cell(spawn['burst'])} | {_cell(fork['burst'])} | "
            f"{_mib(_p50(spawn['pss']))} | {_mib(_p50(fork['pss']))} |"
        )
    if "large" in found:
        fork, spawn = found["large"]["fork"], found["large"]["spawn"]
        first = _p50(fork["scale_up"])
        lines += [
            "",
            f"With torch, a forked worker's first result: {_ms(first)} p50 (target <= "
            f"{_ms(FORK_FIRST_RESULT_TARGET)}: {_verdict(first <= FORK_FIRST_RESULT_TARGET)}; "
            f"spawned: {_ms(_p50(spawn['scale_up']))}). PSS of eight forked workers "
            f"{_mib(_p50(fork['pss']))} against {_mib(_p50(spawn['pss']))} spawned "
            f"({_verdict(_p50(fork['pss']) < _p50(spawn['pss']))} the target: lower).",
        ]
    return lines


def _scale_table(found: dict[str, list[float]]) -> list[str]:
    return [
        "",
        "## Scale: twenty new environments at once",
        "",
        "Twenty endpoints, each needing two of twenty small packages (no two alike), called",
        "together from one program with an empty store and warm package caches.",
        "",
        "| | p50 (p99) |",
        "| --- | --- |",
        f"| all twenty first results in | {_cell(found['total'])} |",
        f"| endpoint number 20's first result | {_cell(found['twentieth'])} |",
        f"| peak memory, program and every process under it (RSS summed) | "
        f"{_mib(_p50(found['peak']))} |",
        f"| the pool once every result is in (20 workers, RSS summed) | "
        f"{_mib(_p50(found['pool']))} |",
    ]


def _http_table(results: dict[str, list[dict[str, float]]]) -> list[str]:
    lines = [
        "",
        "## HTTP: `flash run` against a bare FastAPI app",
        "",
        "| `POST /echo/runsync` | round | requests/s, 32 clients | p50 | p99 | CPU per request: "
        "server + worker | one client: p50 | p99 | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rounds = len(results["openflash"])
    for i in range(rounds):
        for name, runs in results.items():
            r = runs[i]
            lines.append(
                f"| {name} | {i + 1} | {r['rps']:.0f} | {_ms(r['p50'])} | {_ms(r['p99'])} | "
                f"{r['cpu_ms'] * 1000:.0f} + {r['cpu_others_ms'] * 1000:.0f} µs | "
                f"{_ms(r['single_p50'])} | {_ms(r['single_p99'])} | {r['load']:.1f} |"
            )
    lines.append("")
    for name in [n for n in results if n != "bare FastAPI"]:
        pairs = list(zip(results[name], results["bare FastAPI"], strict=True))
        speed = [ours["rps"] / bare["rps"] for ours, bare in pairs]
        tail = [ours["p99"] / bare["p99"] for ours, bare in pairs]
        lines.append(
            f"- {name}: {', '.join(f'{x:.2f}x' for x in speed)} the bare app's throughput "
            f"(target >= {HTTP_RATIO_TARGET}: {_verdict(min(speed) >= HTTP_RATIO_TARGET)}); "
            f"p99 {', '.join(f'{x:.1f}x' for x in tail)} the bare app's (target <= "
            f"{HTTP_P99_TARGET}: {_verdict(max(tail) <= HTTP_P99_TARGET)})."
        )
    return [
        *lines,
        "",
        "Both serve a trivial async function under uvicorn; openflash runs it on a worker (one,",
        "max_concurrency 32), the bare app in its handler; one client process, keep-alive",
        "connections. CPU per request: the server's process and the processes it started (its",
        "worker) over the 32-client phase. Rounds run the servers in turn; load is the 1-minute",
        "load average.",
    ]


def _ray_table(results: dict[str, object]) -> list[str]:
    ours = results["openflash"]
    theirs = results["ray"]
    ours_disk, ray_disk = int(results["openflash_disk"]), int(results["ray_disk"])  # type: ignore[call-overload]
    speed = _p50(theirs) / _p50(ours)  # type: ignore[arg-type]
    space = ray_disk / max(ours_disk, 1)
    return [
        "",
        "## The Ray backend: first call with a new environment (small set)",
        "",
        "| | p50 (p99) | extra disk |",
        "| --- | --- | --- |",
        f"| openflash Ray backend (node store, py_executable) | {_cell(ours)} | "  # type: ignore[arg-type]
        f"{_mib(ours_disk)} |",
        f"| Ray `runtime_env={{'uv': [...]}}` | {_cell(theirs)} | {_mib(ray_disk)} |",  # type: ignore[arg-type]
        "| Ray starting an actor with a runtime_env of its own, no packages (the floor) | "
        f"{_cell(results['floor'])} | |",  # type: ignore[arg-type]
        "",
        f"First call {speed:.2f}x faster (target >= {RAY_BACKEND_SPEED_TARGET:.0f}x: "
        f"{_verdict(speed >= RAY_BACKEND_SPEED_TARGET)}); {space:.0f}x less disk per extra "
        f"environment (target >= {RAY_BACKEND_DISK_TARGET:.0f}x: "
        f"{_verdict(space >= RAY_BACKEND_DISK_TARGET)}).",
        "",
        "A one-node Ray cluster; each repetition is a new driver calling a function that needs",
        "the small set in an environment that does not exist yet (openflash: removed from the",
        "node's store, and the driver's resolution of the set forgotten, its packages seen on",
        "the index by the warm-up; Ray: a spelling its cache has not seen). Disk: what an",
        "environment adds",
        "beyond the node's shared caches (uv's and the bytecode store, hardlinked from), against",
        "Ray's per-environment folder (Ray installs with `uv pip install --no-cache`: copies).",
    ]


def _report(sections: list[str], argv: list[str]) -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    command = " ".join(["python -m bench", *argv])
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"Measured {datetime.date.today().isoformat()} with `{command}`: openflash "
            f"{openflash.__version__}, uv {_version([uv.find_uv_bin(), '--version'])}, pip "
            f"{_version([sys.executable, '-m', 'pip', '--version'])}, Ray {_ray_version()}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
            f"{cpus} CPUs ({_cpu_model()}), {_memory()}.",
            "",
            "Each figure is what a user program waits for, from the call to its result, in a",
            "separate process with a store of its own. Every column of a table comes from the",
            "same run, repetitions interleaved, so that the ratios hold on a noisy machine.",
            *sections,
            "",
            "Reproduce: `pip install -e '.[bench]' && python -m bench` (all cases take about",
            "fifteen minutes here; `python -m bench --help` picks cases, sets and repetitions).",
            "",
        ]
    )


def _version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    return done.stdout.split()[1] if done.returncode == 0 else "?"


def _ray_version() -> str:
    try:
        import ray
    except ImportError:
        return "not installed"
    return ray.__version__


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        return "memory unknown"
    return f"{kib / 2**20:.0f} GiB"


if __name__ == "__main__":
    main()
