"""A timeline of one first call: the first environment on a machine (issue 25, item 5).

python -m bench.first_env_timeline [RUNS] [--before SRC]

Each run: a new, empty FLASH_HOME (uv's cache warm), the medium set, FLASH_BYTECODE=background
(the default). Printed, in seconds from the program's call (a wall clock all processes share):
the program's own progress lines (resolving, installed, starting a worker); every process it
started (uv, the worker, its template, the compiler: when it started and the CPU it used until
the first result, read from /proc); inside the worker, when it began importing the set, the first
and last file it imported, how many files it found compiled by the background compiler and how
many it compiled itself (and of those, how many the compiler compiled again), the meeting point;
and the first result. With ``--before SRC`` the runs alternate with the tree at SRC (PYTHONPATH).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from bench import cases
from openflash.envs.store import Store

#: The program: one call of a function that imports the set; in the worker, every module file
#: loaded from source is recorded (its path, the time, whether its .pyc was there).
PROGRAM = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from openflash import CpuLiveServerless, remote

    DEPS = json.loads(sys.argv[1])
    IMPORTS = json.loads(sys.argv[2])

    @remote(CpuLiveServerless(name="bench"), dependencies=DEPS)
    def trivial(modules):
        import importlib, importlib.util, os, sys, time
        from importlib import _bootstrap_external as ext
        loads = []
        original = ext.SourceFileLoader.get_code

        def get_code(self, fullname):
            path = self.get_filename(fullname)
            if "site-packages" in path:
                pyc = importlib.util.cache_from_source(path)
                loads.append((path, time.time(), os.path.exists(pyc)))
            return original(self, fullname)

        ext.SourceFileLoader.get_code = get_code
        began = time.time()
        for name in modules:
            importlib.import_module(name)
        ext.SourceFileLoader.get_code = original
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        cpu = time.process_time()
        return {"began": began, "ended": time.time(), "loads": loads, "pid": os.getpid(),
                "started": boot + ticks / os.sysconf("SC_CLK_TCK"), "cpu": cpu}

    async def main():
        print(f"CALL {time.time()}", file=sys.stderr, flush=True)
        out = await trivial(IMPORTS)
        out["result"] = time.time()
        print(json.dumps(out))

    asyncio.run(main())
    """
)

_TICK = os.sysconf("SC_CLK_TCK")
with open("/proc/stat") as _f:
    _BOOT = next(float(line.split()[1]) for line in _f if line.startswith("btime"))


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent, start time, CPU seconds) of ``pid``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    return int(fields[1]), _BOOT + int(fields[19]) / _TICK, cpu


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:300]
    except OSError:
        return ""


class _Watch(threading.Thread):
    """Every process descending from ``root``: its command, start and last CPU figure."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.seen = root, {}  # pid -> [cmdline, start, cpu]
        self.stop = threading.Event()

    def run(self) -> None:
        parents = {self.root}
        while not self.stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                pid = int(entry)
                stat = _stat(pid)
                if stat is None:
                    continue
                if pid in parents or stat[0] in parents:
                    parents.add(pid)
                    known = self.seen.setdefault(pid, [_cmdline(pid), stat[1], stat[2], 0.0])
                    known[2], known[3] = stat[2], time.time()
            time.sleep(0.01)


def _kind(cmdline: str) -> str:
    if "openflash-compile" in cmdline:
        return "compile"
    if "bytecode_later" in cmdline:
        return "compiler (parent)"
    if "/uv " in cmdline or cmdline.startswith("uv "):
        return "uv " + " ".join(cmdline.split()[1:3])
    if "forkserver" in cmdline:
        return "template"
    if "workers.child" in cmdline or "namespace" in cmdline:
        return "worker"
    if "program.py" in cmdline or "timeline.py" in cmdline:
        return "program"
    return cmdline[:60]


def run_once(bench: cases.Bench, home: Path, src: str | None) -> dict:
    package_set = cases.package_sets()["medium"]
    program = bench.root / "timeline.py"
    program.write_text(PROGRAM)
    env = bench.environ(home)
    if src:
        env["PYTHONPATH"] = src
    env["FLASH_BYTECODE"] = "background"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(program),
            json.dumps(package_set.specs),
            json.dumps(package_set.imports),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = _Watch(proc.pid)
    watch.start()
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.time(), line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.stdout is not None
    out = proc.stdout.read()  # stderr is the reader's alone
    proc.wait(timeout=600)
    reader.join()
    watch.stop.set()
    watch.join()
    if proc.returncode:
        raise RuntimeError("\n".join(line for _, line in lines[-30:]))
    result = json.loads(out.strip().splitlines()[-1])
    called = next(
        float(m.group(1)) for _, line in lines if (m := re.search(r"CALL (\d+\.\d+)", line))
    )
    # The .pyc of every file the worker loaded: written before the result by the compiler?
    loads = result["loads"]
    found = sum(1 for _, _, had in loads if had)
    own = [(path, at) for path, at, had in loads if not had]
    twice = 0
    for path, _ in own:
        pyc = Path(importlib.util.cache_from_source(path))
        try:
            if pyc.stat().st_mtime < result["result"]:
                twice += 1
        except OSError:
            pass
    compiled_before = 0
    envs = list(home.glob("envs/*/lib/python*/site-packages"))
    if envs:
        for pyc in envs[0].rglob("*.pyc"):
            if pyc.stat().st_mtime < result["result"]:
                compiled_before += 1
    store = Store(home)
    for entry in store.entries("envs"):
        store.remove("envs", entry.key)  # stops its compiler
    events = [(t - called, line) for t, line in lines if "CALL " not in line]
    procs = sorted(
        (start - called, last - called, _kind(cmd), cpu, cmd)
        for cmd, start, cpu, last in watch.seen.values()
    )
    last_found = max((at for _, at, had in loads if had), default=None)
    return {
        "first result": result["result"] - called,
        "events": events,
        "processes": procs,
        "worker began importing": result["began"] - called,
        "worker imports ended": result["ended"] - called,
        "worker started": result["started"] - called,
        "worker CPU": result["cpu"],
        "files loaded": len(loads),
        "found compiled": found,
        "compiled by the worker": len(own),
        "of which the compiler wrote too before the result": twice,
        "pyc files in the env before the result": compiled_before,
        "last found compiled at": None if last_found is None else last_found - called,
        "first own compile at": (own[0][1] - called) if own else None,
        "last own compile at": (own[-1][1] - called) if own else None,
    }


def _print(label: str, r: dict) -> None:
    print(f"--- {label}: first result {r['first result']:.2f} s; load {os.getloadavg()[0]:.1f}")
    for at, line in r["events"]:
        print(f"  {at:6.2f}  {line[:110]}")
    for start, last, kind, cpu, cmd in r["processes"]:
        print(f"  {start:6.2f}-{last:5.2f}  process {kind}: CPU {cpu:.2f} s")
        if os.environ.get("TIMELINE_COMMANDS"):
            print(f"      {cmd[:300]}")
    for key, value in r.items():
        if key not in ("events", "processes"):
            print(f"  {key}: {value if not isinstance(value, float) else round(value, 2)}")


def main(argv: list[str]) -> None:
    runs = int(argv[0]) if argv and argv[0].isdigit() else 1
    before = argv[argv.index("--before") + 1] if "--before" in argv else None
    bench = cases.Bench()
    shared = os.environ.get("OPENFLASH_TEST_UV_CACHE")
    if shared:
        bench.uv_cache = Path(shared)
    try:
        warm = bench.root / "home-warm"
        bench.run(warm, cases.package_sets()["medium"].specs, 1)  # uv's cache and index seen
        for entry in Store(warm).entries("envs"):
            Store(warm).remove("envs", entry.key)  # stops its compiler
        for rep in range(runs):
            trees = [("before", before), ("this tree", None)] if before else [("this tree", None)]
            for label, src in trees:
                home = bench.root / f"home-{rep}-{label.replace(' ', '-')}"
                _print(f"{label} #{rep + 1}", run_once(bench, home, src))
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
