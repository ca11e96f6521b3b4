"""A tiny sdist that uv must build from source, with an in-tree PEP 517 backend (no build
requirements, so nothing is downloaded). Its build runs a stand-in compiler: a child process
that writes its pid to ``compiler_pid`` and, while ``hold`` exists, keeps running (a build that
takes minutes); then the backend writes a real wheel."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

BACKEND = """
import base64, hashlib, os, subprocess, sys, time, zipfile

NAME, VERSION = {name!r}, {version!r}
HOLD, PID = {hold!r}, {pid!r}
DIST = NAME.replace("-", "_")
INFO = f"{{DIST}}-{{VERSION}}.dist-info"

def _meta():
    return f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n"

def prepare_metadata_for_build_wheel(d, config_settings=None):
    os.makedirs(os.path.join(d, INFO), exist_ok=True)
    with open(os.path.join(d, INFO, "METADATA"), "w") as f:
        f.write(_meta())
    return INFO

def build_wheel(d, config_settings=None, metadata_directory=None):
    compiler = subprocess.Popen([sys.executable, "-c",
        "import os, sys, time\\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\\n"
        "while os.path.exists(sys.argv[2]): time.sleep(0.05)\\n", PID, HOLD])
    compiler.wait()
    files = {{f"{{DIST}}/__init__.py": f"VERSION = {{VERSION!r}}\\n", f"{{INFO}}/METADATA": _meta(),
             f"{{INFO}}/WHEEL": "Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{{path}},sha256={{digest.decode()}},{{len(text.encode())}}")
    files[f"{{INFO}}/RECORD"] = "\\n".join(record + [f"{{INFO}}/RECORD,,"]) + "\\n"
    wheel = f"{{DIST}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(d, wheel), "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel
"""


def slow_sdist(folder: Path, name: str, version: str, *, hold: Path, compiler_pid: Path) -> Path:
    """``name==version`` as an sdist in ``folder`` (a find-links folder)."""
    dist = name.replace("-", "_")
    backend = BACKEND.format(name=name, version=version, hold=str(hold), pid=str(compiler_pid))
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
        'backend-path = ["."]\n',
        "PKG-INFO": f"Metadata-Version: 2.2\nName: {name}\nVersion: {version}\n",
        "backend.py": backend,
    }
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / f"{dist}-{version}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for file, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{dist}-{version}/{file}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return sdist
