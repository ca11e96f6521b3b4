"""Real local users for the store's trust tests: created with ``useradd`` for one test, removed
after it, and a Python they can run (root's interpreter is under /root, which no other user may
enter: a venv on Debian's /usr/bin/python3.11 with openflash's dependencies at the versions
running here, installed from the shared uv cache, as tests/e2e/test_non_root.py does)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3.11")

#: The marks of a module whose tests create real local users (root, useradd, setpriv and
#: Debian's own Python, which a created user can run).
NEEDS_LOCAL_USERS = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating a user needs root"),
    pytest.mark.skipif(
        not (shutil.which("useradd") and shutil.which("setpriv") and SYSTEM_PYTHON.exists()),
        reason="needs useradd, setpriv and Debian's /usr/bin/python3.11",
    ),
]


@dataclass(frozen=True)
class LocalUser:
    name: str
    uid: int
    gid: int

    def run(
        self, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` run as this user (``setpriv``: its ids, no other groups), with ``env`` only."""
        return subprocess.run(
            [
                *("setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"),
                *("env", "-i", *(f"{k}={v}" for k, v in (env or {}).items()), *argv),
            ],
            cwd=cwd or "/",
            capture_output=True,
            text=True,
            timeout=600,
        )


def create_user(prefix: str) -> LocalUser:
    name = f"{prefix}{secrets.token_hex(3)}"
    subprocess.run(
        [
            *("useradd", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"),
            *("--shell", "/usr/sbin/nologin", name),
        ],
        check=True,
        timeout=60,
    )
    entry = pwd.getpwnam(name)
    return LocalUser(name, entry.pw_uid, entry.pw_gid)


def remove_user(user: LocalUser) -> None:
    subprocess.run(["userdel", user.name], check=True, timeout=60)


def readable_venv(folder: Path) -> Path:
    """A venv every user can run, with openflash's dependencies (openflash itself comes from
    ``PYTHONPATH``), pinned to this interpreter's versions so that they come from the cache."""
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
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
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


def network_environ() -> dict[str, str]:
    """The host's settings for reaching the indexes (proxies, CA bundles, uv's index settings),
    which a user's run needs too; caches stay its own."""
    certificates = {"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}
    return {
        k: v
        for k, v in os.environ.items()
        if k in certificates
        or k.lower().endswith("_proxy")
        or (k.startswith(("UV_", "PIP_")) and "CACHE" not in k)
    }
