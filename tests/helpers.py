"""Helpers for tests that run user programs as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def run_python(
    script: Path,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``python script`` as a user would, with FLASH_* taken from this test's environment."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd or script.parent,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_wheel(
    directory: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = ()
) -> Path:
    """A minimal, valid pure-Python wheel holding ``files`` (path -> source), its METADATA
    naming ``requires`` (Requires-Dist lines)."""
    import base64
    import hashlib
    import zipfile

    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    contents[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: openflash-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


def status_without(
    packages: set[str], target: Path, source: Path = Path("/var/lib/dpkg/status")
) -> Path:
    """A dpkg status like ``source`` without ``packages`` and what depends on them.

    It describes a base system that lacks those packages (as a worker image might), without
    touching the host: the host's files stay where they are, apt just no longer counts on them.
    """
    import re

    stanzas = [s for s in source.read_text().split("\n\n") if s.strip()]

    def field(stanza: str, name: str) -> str:
        match = re.search(rf"^{name}: (.*(?:\n .*)*)", stanza, re.M)
        return match[1] if match else ""

    depends = {}
    for stanza in stanzas:
        names = {
            re.split(r"[\s(:]", d.strip())[0]
            for d in re.split(
                r"[,|]", field(stanza, "Depends") + "," + field(stanza, "Pre-Depends")
            )
            if d.strip()
        }
        depends[field(stanza, "Package")] = names
    removed = set(packages)
    while True:
        more = {p for p, deps in depends.items() if p not in removed and deps & removed}
        if not more:
            break
        removed |= more
    kept = [s for s in stanzas if field(s, "Package") not in removed]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n\n".join(kept) + "\n\n")
    return target


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FlashServer:
    """``flash run`` on a project folder, as a real process with a real uvicorn server."""

    def __init__(
        self,
        project: Path,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.project = project
        self.python = python or sys.executable  # the interpreter `flash run` runs in
        self.port = port or free_port()  # where it answers
        self.requested_port = self.port  # what it is asked for
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.log = project / ".flash-test-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> FlashServer:
        import time

        import httpx

        log = self.log.open("a")
        self.proc = subprocess.Popen(
            [
                self.python,
                "-m",
                "openflash",
                "run",
                str(self.project),
                "--port",
                str(self.requested_port),
                *self.args,
            ],
            cwd=self.project,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"flash run exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                headers = (
                    {"Authorization": f"Bearer {self.env['FLASH_API_KEY']}"}
                    if "FLASH_API_KEY" in self.env
                    else {}
                )
                if httpx.get(f"{self.url}/health", timeout=1, headers=headers).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"flash run did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the server and everything it started, as a crash would."""
        import signal

        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> FlashServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Nothing but this machine: pages must work offline.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


def chromium(url: str, profile: Path, *args: str, budget_ms: int = 5000) -> str:
    """Load ``url`` in headless Chromium, let its scripts run, and return what it printed."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        import pytest

        if os.environ.get("OPENFLASH_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (OPENFLASH_REQUIRE_BROWSER) but not installed")
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    done = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def run_flash(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The ``flash`` command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "openflash", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
