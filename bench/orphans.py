"""How soon a killed program's workers and their children are gone (issue 26, orphans).

python -m bench.orphans [REPS]    # prints the rows for bench/RESULTS.md

The program of tests/reliability/test_orphans.py (its ``PROGRAM``): two workers of one endpoint
(spawned, or one spawned and one forked from its template, ``FLASH_FORK``), each running an
``async def`` that blocks its event loop with ``time.sleep`` after starting two ``sleep 1000``
children (one in a session of its own). Timed: from the program's SIGKILL until every worker and
child is gone from /proc (a zombie counts as gone), polled each millisecond. The store is a fresh
one of this run (the bare environment builds once, untimed).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_TESTS = HERE.parent / "tests" / "reliability" / "test_orphans.py"


def _program() -> str:
    return _TESTS.read_text().split('PROGRAM = """', 1)[1].split('"""', 1)[0]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def once(folder: Path, fork: bool, env: dict[str, str]) -> float:
    """Seconds from the program's SIGKILL until its workers and their children are gone."""
    out = folder / "out"
    out.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, str(folder.parent / "a.py"), str(out), "hang"],
        env={**env, "FLASH_FORK": "1" if fork else "0", "FLASH_QUIET": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while len(list(out.glob("*.json"))) < 3:
        if proc.poll() is not None:
            raise RuntimeError("the program ended before its workers started")
        time.sleep(0.01)
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    pids = {pid for r in records for pid in (r["worker"], r["child"], r["detached"])}
    started = time.monotonic()
    proc.kill()
    proc.wait()
    while any(_alive(pid) for pid in pids):
        if time.monotonic() - started > 60:
            raise RuntimeError(f"still running a minute after the SIGKILL: {pids}")
        time.sleep(0.001)
    return time.monotonic() - started


def main(reps: int = 10) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-orphans-") as tmp:
        root = Path(tmp)
        (root / "a.py").write_text(_program())
        env = {**os.environ, "FLASH_HOME": str(root / "home")}
        load = os.getloadavg()[0]
        for fork in (False, True):
            times = [once(root / f"{fork}-{i}", fork, env) for i in range(reps)]
            how = "one spawned, one forked" if fork else "both spawned"
            print(
                f"| {how} | {reps} | {statistics.median(times) * 1000:.1f} ms |"
                f" {max(times) * 1000:.1f} ms | {load:.1f} |"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
