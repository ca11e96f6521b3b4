"""A decorated class stays a class, and its instances still run on a worker (a real run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from openflash import Endpoint
from openflash.api.remote import RemoteClass

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "classes" / "stay_classes.py"


def test_a_decorated_class_is_a_type() -> None:
    @Endpoint(name="typed-class", cpu="cpu3c-1-2")
    class Box:
        kind = "box"

        def get(self) -> int:
            return 1

    assert isinstance(Box, type) and isinstance(Box, RemoteClass)
    assert Box.__name__ == "Box" and Box.kind == "box"
    assert Box | None == (Box | None)  # a union with a real type
    assert issubclass(Box, Box)


def test_isinstance_annotations_and_remote_methods_under_python(tmp_path: Path) -> None:
    script = tmp_path / "stay_classes.py"
    script.write_text(FIXTURE.read_text())
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines == ["a Counter none True", "10 __main__.Counter | None", "15 25"]
