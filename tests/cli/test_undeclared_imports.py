"""flash check: modules a function imports that its environment will not provide, with the
distribution to add; not the standard library's, nor the project's own modules, nor what a
declared distribution provides (by its name, the import-to-distribution map, or, once the
environment is built, the modules its installed files list). Real uv, the real CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

from openflash.deps.imports import modules_provided

from helpers import make_wheel, run_flash, write

APP = """
import helpers
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="vision"), dependencies=["pyyaml==6.0.2", "acme-tools"],
        find_links=["wheels"])
def vision() -> str:
    import json
    import yaml
    from yaml.constructor import SafeConstructor  # dotted: still yaml's
    import acmetk
    import cv2
    return helpers.tag(json.dumps(yaml.safe_load("a: 1")))

@remote(CpuLiveServerless(name="plain"))
def plain() -> str:
    import requests
    return requests.__name__
"""


def _undeclared(project: Path) -> list[tuple[list[str], str]]:
    done = run_flash("check", str(project), "--json", cwd=project)
    assert done.returncode == 0, done.stderr[-3000:]
    issues = json.loads(done.stdout)["issues"]
    return [(i["endpoints"], i["message"]) for i in issues if i["kind"] == "undeclared-import"]


def test_check_names_undeclared_imports_and_the_distribution_to_add(
    tmp_path: Path, fresh_home: Path
) -> None:
    project = tmp_path / "project"
    # A distribution whose module has another name, in no map: acme-tools provides acmetk.
    make_wheel(project / "wheels", "acme_tools", "1.0", {"acmetk/__init__.py": "X = 1\n"})
    write(project / "helpers.py", "def tag(text):\n    return text\n")
    write(project / "app.py", APP)
    cv2 = "imports 'cv2', which none of its dependencies provides: add 'opencv-python' to its "
    acmetk = "imports 'acmetk', which none of its dependencies provides: add 'acmetk' to its "
    requests = "imports 'requests', which none of its dependencies provides: add 'requests' to "
    before = _undeclared(project)
    assert before == [
        (["plain"], requests + "its dependencies"),
        (["vision"], acmetk + "dependencies"),
        (["vision"], cv2 + "dependencies"),
    ]
    # Once its environment is built, what the installed files provide is known: acmetk.
    built = run_flash("env", "build", str(project), "vision", cwd=project)
    assert built.returncode == 0, built.stderr[-3000:]
    after = _undeclared(project)
    assert after == [
        (["plain"], requests + "its dependencies"),
        (["vision"], cv2 + "dependencies"),
    ]


def test_modules_provided_come_from_names_the_map_and_installed_records(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    write(
        site / "acme_tools-1.0.dist-info" / "RECORD",
        "acmetk/__init__.py,sha256=x,5\n"
        "_acme_speedups.cpython-311-x86_64-linux-gnu.so,sha256=y,9\n"
        "__pycache__/x.cpython-311.pyc,,\n"
        "acme_tools-1.0.dist-info/RECORD,,\n"
        "../../../bin/acme,sha256=z,3\n",
    )
    found = modules_provided(["acme-tools", "PyYAML", "python-dateutil"], site)
    assert {"acmetk", "_acme_speedups", "acme_tools", "yaml", "dateutil"} <= found
    assert not {"__pycache__", "bin", "..", "acme_tools-1.0.dist-info"} & found
    assert modules_provided(["PyYAML"]) == {"pyyaml", "yaml"}
    assert "google" in modules_provided(["google-cloud-storage"])
