"""What the same first call costs without openflash: the peers the cold start table compares.

- *pip*: a worker that installs on cold start, as Runpod Flash's workers do: a fresh virtualenv,
  ``pip install`` of the set (pip's own cache warm), then a new interpreter that imports the set
  and calls the function.
- *Ray*: ``runtime_env={"uv": [...]}`` on a task, from a new driver, with Ray's defaults (uv
  installs with ``--no-cache``). Each repetition passes one more no-op option to uv
  (``-C bench-rep=N``, a build setting no wheel reads) so that Ray's environment cache misses, as it
  would for a set it has not seen. For the empty set, a task whose runtime_env only sets a variable
  (a new worker process, no packages).
- *plain process*: the floor. A new process of an interpreter that already has the set imports it
  and calls the function, with nothing in between.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

CALL = textwrap.dedent(
    """
    import importlib, json, sys
    def trivial(x, modules):
        for name in modules:
            importlib.import_module(name)
        return x
    print(json.dumps(trivial(1, json.loads(sys.argv[1]))))
    """
)

RAY_PROGRAM = textwrap.dedent(
    """
    import json, sys, time, ray
    specs, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    address, rep = sys.argv[3], sys.argv[4]
    ray.init(address=address, logging_level="ERROR")
    if specs:
        runtime_env = {"uv": {"packages": specs,
                              "uv_pip_install_options": ["--no-cache", "-C", f"bench-rep={rep}"]}}
    else:
        runtime_env = {"env_vars": {"BENCH_REP": rep}}

    @ray.remote(runtime_env=runtime_env)
    def trivial(x, modules):
        import importlib
        for name in modules:
            importlib.import_module(name)
        return x

    started = time.perf_counter()
    ray.get(trivial.remote(1, modules))
    print(json.dumps(time.perf_counter() - started))
    """
)


def _check(argv: list[str], env: dict[str, str], timeout: float = 1800) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:4]))} ... failed:\n{done.stderr[-3000:]}")
    return done.stdout


def pip_first_call(venv: Path, specs: list[str], imports: list[str], env: dict[str, str]) -> float:
    """Seconds from nothing to the first result for a worker that installs with pip."""
    started = time.perf_counter()
    _check([sys.executable, "-m", "virtualenv", "-q", str(venv)], env)
    python = str(venv / "bin" / "python")
    if specs:
        _check([python, "-m", "pip", "install", "-q", *specs], env)
    _check([python, "-c", CALL, json.dumps(imports)], env)
    return time.perf_counter() - started


def plain_process_call(python: str, imports: list[str], env: dict[str, str]) -> float:
    """Seconds for a new interpreter that has the set to import it and call the function."""
    started = time.perf_counter()
    _check([python, "-c", CALL, json.dumps(imports)], env)
    return time.perf_counter() - started


def ray_first_call(
    program: Path,
    address: str,
    specs: list[str],
    imports: list[str],
    rep: int,
    env: dict[str, str],
) -> float:
    """Seconds from the call to its result for a Ray task with the set as its uv runtime env."""
    out = _check(
        [sys.executable, str(program), json.dumps(specs), json.dumps(imports), address, str(rep)],
        env,
    )
    return float(json.loads(out.strip().splitlines()[-1]))


def pip_environ(cache: Path) -> dict[str, str]:
    """The environment for pip and virtualenv: their caches under the bench's root."""
    return {
        **os.environ,
        "PIP_CACHE_DIR": str(cache / "pip"),
        "VIRTUALENV_OVERRIDE_APP_DATA": str(cache / "virtualenv"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
