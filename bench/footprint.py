"""What an environment costs once built: import time against a pip venv, and disk.

- *Import time*: a new interpreter imports the medium set, in the openflash environment and in a
  virtualenv pip installed the same set into (both with bytecode: openflash's checked-hash files
  linked from its store, pip's compiled at install); the repetitions alternate between the two.
- *Disk*: a second environment sharing the medium set's packages (the set plus ``six``) is built
  beside the first; what it adds is the blocks under uv's cache, the bytecode store and both
  environments, less those without it (``du`` counts a hardlinked file once). A pip venv of the
  set is shown beside it: every venv pip builds is a copy.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

from bench import cases, peers
from bench.disk import blocks

TIMER = (
    "import importlib, json, sys, time\n"
    "started = time.perf_counter()\n"
    "for name in json.loads(sys.argv[1]):\n"
    "    importlib.import_module(name)\n"
    "print(time.perf_counter() - started)\n"
)

EXTRA = ["six"]


def _import_seconds(python: Path, imports: list[str], env: dict[str, str]) -> float:
    done = subprocess.run(
        [str(python), "-c", TIMER, json.dumps(imports)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def run(bench: cases.Bench, medium: cases.PackageSet, reps: int) -> dict[str, object]:
    home = bench.root / "home-footprint"
    first = Path(bench.run_program(home, medium.specs, 1)["python"]).parent.parent
    pip_env = peers.pip_environ(bench.root / "pip-cache")
    venv = bench.root / "venv-footprint"
    peers.pip_first_call(venv, medium.specs, [], pip_env)
    ours_times, pip_times = [], []
    for _ in range(reps):
        ours_times.append(_import_seconds(first / "bin" / "python", medium.imports, pip_env))
        pip_times.append(_import_seconds(venv / "bin" / "python", medium.imports, pip_env))

    second = Path(bench.run_program(home, [*medium.specs, *EXTRA], 1)["python"]).parent.parent
    if second == first:
        raise RuntimeError("the second environment is the first one: nothing to measure")
    shared = (bench.uv_cache, home / "bytecode", first)
    return {
        "import_openflash": ours_times,
        "import_pip": pip_times,
        "ratio": statistics.median(ours_times) / statistics.median(pip_times),
        "extra_env_bytes": blocks(*shared, second) - blocks(*shared),
        "first_env_alone_bytes": blocks(first),
        "pip_venv_bytes": blocks(venv),
    }
