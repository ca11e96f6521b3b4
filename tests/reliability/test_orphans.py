"""Nothing outlives the process that owns it: workers (spawned, forked from a template, and the
template), the processes their functions started, and the commands of a build. Real programs are
SIGKILLed or exit normally while a worker's `async def` blocks its event loop (`time.sleep`) and
has `sleep 1000` children of its own (one in a session of its own, as a daemon); then `/proc` is read until they are gone (a generous bound,
no timing assertion)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from openflash.deps.namespace_mode import layer_mode
from openflash.workers.lifeline import descendants

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]

#: How long the test waits for a process to go (it goes in milliseconds; the bound is generous).
GONE_WITHIN_S = 60.0


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent's wait does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _wait_gone(pids: list[int]) -> list[int]:
    """The pids still alive after ``GONE_WITHIN_S`` (none, once each has gone)."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _records(folder: Path, count: int, proc: subprocess.Popen[str]) -> list[dict]:
    """The ``count`` records the workers wrote (``{worker, parent, child, detached}``)."""
    deadline = time.monotonic() + 300
    while len(found := sorted(folder.glob("*.json"))) < count:
        assert proc.poll() is None or len(found) >= count, proc.communicate()
        assert time.monotonic() < deadline, "the workers never started their children"
        time.sleep(0.05)
    return [json.loads(p.read_text()) for p in found]


PROGRAM = """
import asyncio
import glob
import json
import os
import subprocess
import sys
import time

from openflash import Endpoint

OUT, HOME, HOW = sys.argv[1], os.environ["FLASH_HOME"], sys.argv[2]
# A volume puts the workers (and their template) in a namespace of their own.
VOLUME = sys.argv[3] if len(sys.argv) > 3 else None


@Endpoint(name="orphans", workers=(0, 2), volume=VOLUME)
async def hold(tag: str, seconds: float) -> dict:
    child = subprocess.Popen(["sleep", "1000"])
    # One more that leaves the worker's session, as a daemon would: it is a descendant still.
    detached = subprocess.Popen(["sleep", "1001"], start_new_session=True)
    record = {
        "worker": os.getpid(),
        "parent": os.getppid(),
        "child": child.pid,
        "detached": detached.pid,
    }
    with open(os.path.join(OUT, tag + ".tmp"), "w") as f:
        json.dump(record, f)
    os.rename(os.path.join(OUT, tag + ".tmp"), os.path.join(OUT, tag + ".json"))
    time.sleep(seconds)  # blocks the worker's event loop: it reads no frame meanwhile
    return record


def template_ready() -> bool:
    for note in glob.glob(os.path.join(HOME, "templates", "*.json")):
        pid = os.path.basename(note).split(".")[0]
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == os.getpid():
            return True
    if VOLUME:  # in its PID namespace the note names the template's pid there: any note is ours
        return bool(glob.glob(os.path.join(HOME, "templates", "*.json")))
    return os.environ.get("FLASH_FORK") == "0"


async def main() -> None:
    # The first worker is spawned (its template starts beside it); once the template is ready,
    # two calls at once keep it busy and start a second worker: forked (unless FLASH_FORK=0).
    await hold("first", 0.0)
    while not template_ready():
        await asyncio.sleep(0.1)
    seconds = 1000.0 if HOW == "hang" else 0.5
    await asyncio.gather(hold("a", seconds), hold("b", seconds))
    print("done", flush=True)


asyncio.run(main())
"""


def _start_program(
    tmp_path: Path, how: str, fork: bool, env: dict[str, str], volume: str | None = None
):
    script = write(tmp_path / "a.py", PROGRAM)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), how, *([volume] if volume else [])],
        cwd=tmp_path,
        env={**os.environ, **env, "FLASH_FORK": "1" if fork else "0", "FLASH_QUIET": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, out


def _our_pid_ns() -> str:
    return os.readlink("/proc/self/ns/pid")


def _templates_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                if b"openflash.workers.forkserver" in cmdline:
                    found.append(int(entry))
    return found


@pytest.mark.parametrize(
    ("fork", "namespace"),
    [(False, False), (True, False), (True, True)],
    ids=["spawned", "forked", "forked-in-namespace"],
)
def test_a_killed_program_takes_its_workers_and_their_children(
    tmp_path: Path, fresh_home: Path, fork: bool, namespace: bool, report: Report
) -> None:
    if namespace and not layer_mode().namespaces:
        pytest.skip(f"no namespaces here: {layer_mode().reason}")
    env = {"FLASH_HOME": str(fresh_home), "FLASH_VOLUMES": str(tmp_path / "volumes")}
    proc, out = _start_program(tmp_path, "hang", fork, env, "scratch" if namespace else None)
    pids: list[int] = []
    try:
        records = _records(out, 3, proc)
        workers = [r["worker"] for r in records]
        children = [r[k] for r in records for k in ("child", "detached")]
        ours = os.readlink("/proc/self/ns/mnt")
        if namespace:  # a PID namespace of their own: the records hold pids of in there
            below = descendants(proc.pid)  # this machine's pids of every process below
            pids = [p for p in below if os.readlink(f"/proc/{p}/ns/pid") != _our_pid_ns()]
            assert len(pids) >= 1 + 2 * 3, (below, records)  # workers, template, 6 children
            assert all(os.readlink(f"/proc/{p}/ns/mnt") != ours for p in pids), records
        else:
            templates = _templates_of(proc.pid)
            pids = [*workers, *children, *templates]
            assert all(_alive(p) for p in [*workers, *children]), records
            forked = [r for r in records if r["parent"] != proc.pid]
            if fork:  # the second worker came from the template
                assert forked and templates and {r["parent"] for r in forked} <= set(templates)
            else:
                assert not forked and not templates, records
            assert all(os.readlink(f"/proc/{w}/ns/mnt") == ours for w in workers), records
        proc.kill()  # SIGKILL, while both calls block their workers' loops
        proc.wait()
        left = _wait_gone(pids)
        assert not left, f"still running after the program's SIGKILL: {left} of {records}"
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_leftovers(pids)
    how = "one spawned, one forked from its template" if fork else "both spawned"
    if namespace:
        how += ", in their mount and PID namespaces"
    report(
        "worker lifetime",
        f"SIGKILL to a `python a.py` whose two workers ({how}) each run an `async def` that"
        " blocks its event loop with `time.sleep` and started two `sleep 1000` children (one in"
        " a session of its own)",
        "every worker, template and child was gone shortly after (read from /proc); none ran on"
        " orphaned",
    )


@pytest.mark.parametrize("fork", [False, True], ids=["spawned", "forked"])
def test_a_program_that_exits_leaves_no_worker_or_child(
    tmp_path: Path, fresh_home: Path, fork: bool, report: Report
) -> None:
    env = {"FLASH_HOME": str(fresh_home)}
    proc, out = _start_program(tmp_path, "exit", fork, env)
    pids: list[int] = []
    try:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0 and "done" in output, output
        records = _records(out, 3, proc)
        pids = [p for r in records for p in (r["worker"], r["child"], r["detached"])]
        if fork:
            assert any(r["parent"] != proc.pid for r in records), records
        left = _wait_gone(pids)
        assert not left, f"still running after the program exited: {left} of {records}"
    finally:
        _kill_leftovers(pids)
    how = "one spawned, one forked from its template" if fork else "both spawned"
    report(
        "worker lifetime",
        f"a `python a.py` that exits normally after its functions (on two workers, {how})"
        " started `sleep 1000` children (one in a session of its own) and returned",
        "no worker and no child process was left running",
    )


SERVED = """
import json
import os
import subprocess
import time

from openflash import Endpoint

RUNS = {runs!r}


def alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{{pid}}/stat").read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@Endpoint(name="jobs", workers=(0, 1))
async def job(n: int) -> dict:
    previous = []
    if os.path.exists(RUNS):
        previous = [json.loads(line) for line in open(RUNS)]
    # What of the runs before this one still runs now, as this run starts.
    still = [pid for run in previous for pid in run["pids"] if alive(pid)]
    child = subprocess.Popen(["sleep", "1000"])
    record = {{"n": n, "pids": [os.getpid(), child.pid], "still_running": still}}
    with open(RUNS, "a") as f:
        f.write(json.dumps(record) + "\\n")
    if not previous:
        time.sleep(1000)  # the first run blocks its worker's event loop until killed
    return record
"""


@pytest.mark.parametrize("stopped", [False, True], ids=["worker-running", "worker-stopped"])
def test_a_killed_server_reruns_a_job_only_after_its_worker_is_gone(
    tmp_path: Path, fresh_home: Path, stopped: bool, report: Report
) -> None:
    """With ``stopped``, the worker is stopped (SIGSTOP) before the server's SIGKILL: it cannot
    act on its own death signal, and the next server must kill it before running its job."""
    runs = tmp_path / "runs.jsonl"
    project = tmp_path / "project"
    write(project / "jobs.py", SERVED.format(runs=str(runs)))
    env = {"FLASH_HOME": str(fresh_home)}
    first = FlashServer(project, "--no-reload", env=env).start()
    pids: list[int] = []
    second = None
    try:
        job_id = httpx.post(f"{first.url}/jobs/job/run", json={"input": {"n": 1}}).json()["id"]
        deadline = time.monotonic() + 300
        while not runs.exists() or not runs.read_text().strip():
            assert first.proc is not None and first.proc.poll() is None, first.output()
            assert time.monotonic() < deadline, f"the job never started:\n{first.output()}"
            time.sleep(0.05)
        pids = json.loads(runs.read_text().splitlines()[0])["pids"]
        assert all(_alive(p) for p in pids)
        assert first.proc is not None
        if stopped:
            os.kill(pids[0], signal.SIGSTOP)
        first.proc.kill()  # SIGKILL to `flash run` alone, while the job blocks its worker
        first.proc.wait()
        if stopped:
            time.sleep(0.5)  # what it would have done by now, it has not: it is stopped
            assert _alive(pids[0]) and _alive(pids[1])
        else:
            left = _wait_gone(pids)
            assert not left, f"the worker or its child ran on after the server's SIGKILL: {left}"
        second = FlashServer(project, "--no-reload", port=first.port, env=env).start()
        with httpx.Client(base_url=second.url, timeout=30) as client:
            deadline = time.monotonic() + 300
            while (status := client.get(f"/jobs/job/status/{job_id}").json())["status"] not in (
                "COMPLETED",
                "FAILED",
            ):
                assert time.monotonic() < deadline, status
                time.sleep(0.1)
        assert status["status"] == "COMPLETED", status
        again = [json.loads(line) for line in runs.read_text().splitlines()]
        assert len(again) == 2, again  # run again once, by the restarted server
        assert again[1]["still_running"] == [], again  # and only once the first run was gone
        pids += again[1]["pids"]
        if stopped:
            assert "stopped 1 worker(s) the previous server left running" in second.output()
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
        _kill_leftovers(pids)
    if stopped:
        report(
            "worker lifetime",
            "SIGSTOP to the worker of a running `/run` job (its `sleep 1000` child running on),"
            " then SIGKILL to `flash run`; then a restart",
            "the stopped worker could not die on its own; the restarted server killed it and its"
            " child (noted in `.flash/workers.pids`) before it ran the job again, and when it"
            " did, nothing of the first run was running",
        )
        return
    report(
        "worker lifetime",
        "SIGKILL to `flash run` (alone) while a `/run` job's `async def` blocks its worker's"
        " event loop with `time.sleep` and has a `sleep 1000` child; then a restart",
        "the worker and its child were gone shortly after the kill; the restarted server ran the"
        " job again, and when it did, nothing of the first run was running",
    )


BUILDING = """
import asyncio
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="slow"), dependencies=["acme-slow=={version}"], find_links=["links"])
def built() -> str:
    import acme_slow
    return "built " + acme_slow.VERSION

print(asyncio.run(built()))
"""


def _program_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().rsplit("/")[-1]
    except OSError:
        return ""


def test_a_program_killed_mid_build_leaves_no_uv_and_its_tmp_is_swept(
    tmp_path: Path, uv_cache: Path, report: Report
) -> None:
    import uuid

    from sdists import slow_sdist

    home = tmp_path / "home"
    env = {**os.environ, "FLASH_HOME": str(home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    version = f"1.0.{uuid.uuid4().int % 10**9}"  # never in uv's cache: built from source
    hold, compiler = tmp_path / "hold", tmp_path / "compiler.pid"
    hold.write_text("")
    slow_sdist(tmp_path / "links", "acme-slow", version, hold=hold, compiler_pid=compiler)
    app = write(tmp_path / "app.py", BUILDING.format(version=version))
    proc = subprocess.Popen(
        [sys.executable, str(app)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    uvs: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while not compiler.exists() or not compiler.read_text():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the build never reached its compiler"
            time.sleep(0.05)
        uvs = [p for p in descendants(proc.pid) if _program_name(p) == "uv"]
        building = sorted(p.name for p in (home / "tmp").iterdir())
        assert uvs and any(name.startswith("envs-") for name in building), (uvs, building)
        proc.kill()  # SIGKILL to the program alone, mid-build
        proc.wait()
        left = _wait_gone(uvs)
        assert not left, f"uv ran on after the program's SIGKILL: {left}"
        hold.unlink()  # the build backend's stand-in compiler may end now
        again = subprocess.run(
            [sys.executable, str(app)], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert again.returncode == 0 and f"built {version}" in again.stdout, again.stderr
        still = sorted(p.name for p in (home / "tmp").iterdir())
        assert not set(building) & set(still), (building, still)
    finally:
        hold.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.kill()
        _kill_leftovers(uvs)
    report(
        "builds",
        "SIGKILL to a `python a.py` while uv built a package from source into its environment"
        " in `tmp/`",
        "uv was gone shortly after (it dies with its caller: PR_SET_PDEATHSIG); the next run"
        " swept the dead build's `tmp/` folder and built the environment",
    )
