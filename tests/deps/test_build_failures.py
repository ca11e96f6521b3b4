"""Source-build failures are remembered: each failing build runs once, the next call fails fast.

A tiny sdist whose build backend fails as a compiler would (an in-tree PEP 517 backend, no build
requirements, so nothing is downloaded) sits in a find-links folder; the backend appends a line
to a counter file each time it builds. Real uv, real calls through ``@remote`` in a user's
program.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from openflash import _subprocess
from openflash.envs.build_failures import failed_build
from openflash.envs.uv_options import uv_options
from openflash.errors import EnvironmentBuildError
from openflash.prepare import DependencyKey, Preparer

from helpers import run_flash, run_python, write

BACKEND = """
import os, sys

def _meta(d):
    info = os.path.join(d, "acme_failbuild-1.0.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: acme-failbuild\\nVersion: 1.0\\n")
    return "acme_failbuild-1.0.dist-info"

def prepare_metadata_for_build_wheel(d, config_settings=None):
    return _meta(d)

def build_wheel(d, config_settings=None, metadata_directory=None):
    with open(COUNTER, "a") as f:
        f.write("build\\n")
    print("gcc -c acme.c -o acme.o", file=sys.stderr)
    print("acme.c:3:5: error: 'undeclared_thing' undeclared (first use here)", file=sys.stderr)
    raise SystemExit("error: command 'gcc' failed with exit code 1")
"""

SCRIPT = """
import asyncio
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="fails"), dependencies=["acme-failbuild==1.0"], find_links=["links"])
def fails() -> int:
    return 1

try:
    asyncio.run(fails())
except Exception as e:
    print("error:", type(e).__name__, e)
"""


def _failing_sdist(folder: Path, counter: Path) -> Path:
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
        'backend-path = ["."]\n',
        "PKG-INFO": "Metadata-Version: 2.2\nName: acme-failbuild\nVersion: 1.0\n",
        "backend.py": f"COUNTER = {str(counter)!r}\n{BACKEND}",
    }
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / "acme_failbuild-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"acme_failbuild-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return sdist


def _builds(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_a_failing_source_build_runs_once_and_the_next_call_fails_fast(
    tmp_path: Path, fresh_home: Path
) -> None:
    counter = tmp_path / "builds.txt"
    _failing_sdist(tmp_path / "links", counter)
    options = uv_options(find_links=["links"], base_dir=tmp_path)
    key = DependencyKey(("acme-failbuild==1.0",), (), options=options)

    # The first call: the warning before the build starts, one build (not one offline and one
    # online), the error names the package, its version and the compiler's last lines.
    preparer = Preparer()
    try:
        preparer.build(key)
        raise AssertionError("the build should fail")
    except EnvironmentBuildError as e:
        first = str(e)
    assert _builds(counter) == 1
    assert "acme-failbuild==1.0 failed to build from source" in first
    assert "'undeclared_thing' undeclared" in first
    log = list(preparer.status(key).log)
    warned = next(i for i, line in enumerate(log) if "would be built from source" in line)
    building = next(i for i, line in enumerate(log) if line.startswith("building environment"))
    assert warned < building, log
    assert "acme-failbuild" in log[warned]

    # The second call, from a user's program (another process): fails fast, nothing built.
    write(tmp_path / "app.py", SCRIPT)
    done = run_python(tmp_path / "app.py")
    assert _builds(counter) == 1, done.stdout + done.stderr
    assert "error: EnvironmentBuildError" in done.stdout, done.stdout + done.stderr
    assert "acme-failbuild==1.0 failed to build from source here at" in done.stdout
    assert "'undeclared_thing' undeclared" in done.stdout
    assert "flash check --refresh" in done.stdout
    assert "would be built from source" not in done.stderr  # it is not built: no warning

    # FLASH_RETRY_BUILDS=1 builds it again (and it fails again, remembered again).
    done = run_python(tmp_path / "app.py", env={"FLASH_RETRY_BUILDS": "1"})
    assert _builds(counter) == 2, done.stdout + done.stderr
    assert "failed to build from source:" in done.stdout

    # `flash check --refresh` forgets it: the next call builds again.
    checked = run_flash("check", "--refresh", str(tmp_path), cwd=tmp_path)
    said = checked.stdout + checked.stderr
    assert "forgot 1 failed source build(s)" in said, said
    assert "acme-failbuild has no wheel for this platform and would be built" in said
    done = run_python(tmp_path / "app.py")
    assert _builds(counter) == 3, done.stdout + done.stderr


def test_failed_build_names_the_locked_pin_only_when_the_backend_failed() -> None:
    built = (
        "error: Failed to build `Acme_FailBuild==1.0`\n"
        "  cause: The build backend returned an error\n"
    )
    assert failed_build(built, "acme-failbuild==1.0\nsix==1.16.0\n") == "acme-failbuild==1.0"
    offline = (
        "error: Failed to build `acme==1.0`\n  cause: Failed to resolve requirements from "
        "`build-system.requires`\n  hint: Packages were unavailable because the network was "
        "disabled.\n"
    )
    assert failed_build(offline, "acme==1.0\n") is None
    assert _subprocess.tail("a\n\nb") == "a\nb"
