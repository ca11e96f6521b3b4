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


def make_wheel(directory: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal, valid pure-Python wheel holding ``files`` (path -> source)."""
    import base64
    import hashlib
    import zipfile

    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
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
