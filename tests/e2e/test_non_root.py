"""The system-layer tests run by a user who is not root: a user created for the run, `runuser`.

openflash's layers are rootless: apt in private folders, workers in user namespaces that an
unprivileged user may create. The CI runs as root, so this test creates a system user (removed
again, /etc's user files as they were), gives it an interpreter it can read (root's is under
/root, which other users cannot enter: a venv on Debian's /usr/bin/python3.11 with openflash's
dependencies at the versions running here, installed from the shared uv cache) and folders of
its own, and runs tests/e2e/test_real_paths.py and test_volumes.py as that user, namespaces and
all: every test must pass, none skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: openflash depends on tomli there
    import tomli as tomllib
import tomllib

ROOT = Path(__file__).resolve().parents[2]
USER = "openflash-nonroot"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
TESTS = ["tests/e2e/test_real_paths.py", "tests/e2e/test_volumes.py"]
#: /etc's files a user's creation and removal touch (their `-` backups aside).
USER_FILES = [Path("/etc", n) for n in ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="creating a user for the run needs root"),
    pytest.mark.skipif(
        not (shutil.which("useradd") and shutil.which("runuser") and SYSTEM_PYTHON.exists()),
        reason="needs useradd, runuser and Debian's /usr/bin/python3.11",
    ),
    pytest.mark.timeout(1800),
]


def _snapshot() -> dict[Path, bytes | None]:
    return {p: p.read_bytes() if p.exists() else None for p in USER_FILES}


@pytest.fixture
def user() -> Iterator[str]:
    """The run's user: created if missing (a system user: no home, no subordinate ids) and
    removed again, leaving /etc's user files as they were."""
    before = _snapshot()
    try:
        pwd.getpwnam(USER)
        created = False
    except KeyError:
        subprocess.run(
            [
                *("useradd", "--system", "--user-group", "--no-create-home"),
                *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", USER),
            ],
            check=True,
            timeout=60,
        )
        created = True
    try:
        yield USER
    finally:
        if created:
            subprocess.run(["userdel", USER], check=True, timeout=60)
            assert _snapshot() == before, "the host's user files changed"


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A folder the user can enter (pytest's own temporary folders are root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="openflash-nonroot-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _readable_venv(folder: Path) -> Path:
    """A venv on Debian's Python (readable by every user) with openflash's dependencies and
    pytest, pinned to this interpreter's versions so that they come from the shared uv cache."""
    venv = folder / "venv"
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "-q", "--python", str(SYSTEM_PYTHON), str(venv)], check=True)
    frozen = subprocess.run(
        [*uv, "pip", "freeze", "--python", sys.executable],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pins = folder / "pins.txt"
    pins.write_text("".join(line + "\n" for line in frozen.splitlines() if "==" in line))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], "pytest", "pytest-timeout"]
    cache = os.environ.get("OPENFLASH_TEST_UV_CACHE") or str(
        Path(tempfile.gettempdir()) / "openflash-test-uv-cache"
    )
    subprocess.run(
        [
            *(*uv, "pip", "install", "-q", "--cache-dir", cache),
            *("--python", str(venv / "bin/python"), "-c", str(pins), *wanted),
        ],
        check=True,
        timeout=600,
    )
    return venv


def _network_setting(name: str) -> bool:
    """Whether the host variable ``name`` says how to reach the indexes (proxies, CA bundles,
    uv's and pip's index settings), which the user's run needs too; caches stay its own."""
    certificates = {"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}
    settings = name.startswith(("UV_", "PIP_")) and "CACHE" not in name
    return name in certificates or name.lower().endswith("_proxy") or settings


def test_the_system_layer_tests_pass_as_a_user_who_is_not_root(user: str, workspace: Path) -> None:
    venv = _readable_venv(workspace)
    owned = {name: workspace / name for name in ("home", "tmp", "uv-cache")}
    for folder in owned.values():
        folder.mkdir()
        shutil.chown(folder, user, user)
    env = {
        **{k: v for k, v in os.environ.items() if _network_setting(k)},
        "HOME": str(owned["home"]),
        "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
        "TMPDIR": str(owned["tmp"]),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT / "src"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENFLASH_TEST_UV_CACHE": str(owned["uv-cache"]),
    }
    done = subprocess.run(
        [
            *("runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items())),
            *(str(venv / "bin/python"), "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider"),
            *("--basetemp", str(owned["tmp"] / "pytest"), *TESTS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    summary = done.stdout.rfind("short test summary")
    report = done.stdout[summary:] if summary >= 0 else done.stdout[-6000:] + done.stderr[-3000:]
    print(f"as {user}: {done.stdout.strip().splitlines()[-1]}")  # in the log with -s
    assert done.returncode == 0, report
    assert "skipped" not in done.stdout, report  # the namespace mode, not the skip reason
    assert " passed" in done.stdout, report
