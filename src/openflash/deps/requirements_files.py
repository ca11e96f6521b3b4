"""A pip requirements file (``pip install -r``) to the PEP 508 strings ``dependencies=`` takes.

uv parses the file, not openflash: it is handed to ``uv add --frozen --raw -r FILE`` in a
scratch project, which records each requirement as written (specifiers, extras, markers, direct
URLs) in the project's ``pyproject.toml`` without resolving anything; openflash reads them back
with ``tomllib``. So every construct pip's format allows is understood as uv understands it:
comments, line continuations, ``-r`` includes (relative to the including file), markers, extras,
and ``--hash`` options (dropped: the lock openflash makes pins hashes of its own with
``flash lock``). Options that configure an installer rather than name a requirement
(``--index-url``, ``-c`` constraint files) do not become dependencies.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from openflash import _subprocess
from openflash.envs.uv import uv_argv, uv_environ
from openflash.errors import DependencyError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["read_requirements"]

_SCRATCH_PROJECT = """\
[project]
name = "openflash-requirements"
version = "0"
requires-python = ">=3.8"
dependencies = []
"""


def read_requirements(path: Path) -> list[str]:
    """The requirements of the pip requirements file at ``path`` and the files it includes
    with ``-r``, as PEP 508 strings sorted by name (as uv writes them).

    Raises ``DependencyError`` naming the file when it does not exist, or with uv's message
    (which names the line) when uv cannot parse it. Takes about 0.1-0.4 s (one uv process).
    """
    if not path.is_file():
        raise DependencyError(
            f"the requirements file {str(path)!r} does not exist",
            hint="fix the path; a relative path starts at the directory of the file that "
            "calls openflash.requirements()",
        )
    with tempfile.TemporaryDirectory(prefix="openflash-requirements-") as tmp:
        project = Path(tmp)
        (project / "pyproject.toml").write_text(_SCRATCH_PROJECT)
        argv = uv_argv(
            "add",
            "--frozen",
            "--raw",
            "--no-config",
            "--quiet",
            "--python",
            sys.executable,
            "--directory",
            str(project),
            "-r",
            str(path.resolve()),
            cache_dir=project / "uv-cache",
        )
        done = _subprocess.run(
            argv, env=uv_environ(), timeout=120, check=False, error=DependencyError
        )
        if not done.ok:
            message = done.stderr.strip().removeprefix("error: ")
            raise DependencyError(
                f"the requirements file {str(path)!r} could not be read: {message}",
                hint="fix the named line; the format is pip's (pip install -r)",
            )
        data = tomllib.loads((project / "pyproject.toml").read_text())
    return [str(spec) for spec in data["project"].get("dependencies", [])]
