"""flash check: modules a function imports that its environment will not provide, with the
distribution to add; not the standard library's, nor the project's own modules, nor what a
declared distribution provides (by its name, the import-to-distribution map, the modules its
wheel's files list: installed once the environment is built, before that unpacked in uv's cache
or fetched with uv). Where a package's modules could be read from nowhere, the module is said
not verified, naming the packages. Real uv, a local index, the real CLI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from index_server import serve_index
from openflash.deps.imports import modules_provided
from openflash.deps.package_modules import cached_modules, set_modules
from openflash.deps.resolve import Lock
from openflash.envs.uv_options import UvOptions
from openflash.prepare.dependency_checks import issues_of
from openflash.prepare.outcomes import SetCheck

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
    requests = "imports 'requests', which none of its dependencies provides: add 'requests' to "
    # Before any build, acme-tools' wheel (fetched with uv, or in uv's cache) says: acmetk.
    before = _undeclared(project)
    assert before == [
        (["plain"], requests + "its dependencies"),
        (["vision"], cv2 + "dependencies"),
    ]
    # Once its environment is built, the installed files say the same.
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


INDEXED = """
from openflash import CpuLiveServerless, remote

@remote(CpuLiveServerless(name="tools"), dependencies=["acme-tools==1.0"])
def tools() -> str:
    import acmetk
    import notthere
    return acmetk.__name__ + notthere.__name__
"""


def _issues(project: Path, env: dict[str, str]) -> list[tuple[str, str]]:
    done = run_flash("check", str(project), "--json", cwd=project, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    issues = json.loads(done.stdout)["issues"]
    return [(i["kind"], i["message"]) for i in issues if i["kind"].endswith("-import")]


def test_check_reads_a_wheels_modules_from_the_index_before_any_build(
    tmp_path: Path, fresh_home: Path
) -> None:
    """A private index and an empty uv cache: `flash check` fetches acme-tools' wheel with uv
    (its modules: acmetk), which stays in uv's cache; a module nothing provides is still named."""
    folder = tmp_path / "index"
    make_wheel(folder, "acme_tools", "1.0", {"acmetk/__init__.py": "X = 1\n"})
    project = tmp_path / "project"
    write(project / "app.py", INDEXED)
    cache = tmp_path / "uv-cache"
    with serve_index(folder) as (url, requests):
        env = {"UV_INDEX_URL": url, "FLASH_UV_CACHE_DIR": str(cache)}
        notthere = (
            "undeclared-import",
            "imports 'notthere', which none of its dependencies provides: add 'notthere' to its "
            "dependencies",
        )
        # Only when an import is explained by nothing known is a wheel fetched.
        pins, scratch = {"acme-tools": "==1.0"}, tmp_path / "scratch-cache"
        options = UvOptions(index_url=url)
        _, unread = set_modules(pins, None, uv_cache=scratch, options=options, wanted=["os"])
        assert (unread, requests) == (("acme-tools",), [])
        got, unread = set_modules(pins, None, uv_cache=scratch, options=options, wanted=["acmetk"])
        assert "acmetk" in got and unread == ()
        requests.clear()
        assert _issues(project, env) == [notthere]
        assert any(r.startswith("/files/acme_tools-1.0") for r in requests)
        assert list(cache.glob("archive-v*/*/acme_tools-1.0.dist-info/RECORD"))
        assert not (fresh_home / "envs").exists() or not any((fresh_home / "envs").iterdir())
        # Read from uv's cache now; the same answer.
        assert _issues(project, env) == [notthere]


def test_modules_come_from_uvs_cache_and_unread_packages_are_not_verified(tmp_path: Path) -> None:
    cache = tmp_path / "uv-cache"
    write(cache / "archive-v0" / "abc" / "acme_tools-1.0.dist-info" / "RECORD", "acmetk/a.py,,\n")
    write(cache / "archive-v0" / "abc" / "acme_tools-1.0.dist-info" / "top_level.txt", "acmex\n")
    write(cache / "archive-v0" / "def" / "acme_tools-2.0.dist-info" / "RECORD", "other/a.py,,\n")
    assert cached_modules({"Acme.Tools": "==1.0"}, cache) == {"acme-tools": {"acmetk", "acmex"}}
    # torch is never fetched; a package no index here serves cannot be: both unverified.
    offline = UvOptions(index_url=f"file://{tmp_path}/nowhere")
    provided, unverified = set_modules(
        {"acme-tools": "==1.0", "torch": "==2.4.0", "nosuch-dist-zz": "==1.0"},
        None,
        uv_cache=cache,
        options=offline,
    )
    assert {"acmetk", "acmex", "torch", "nosuch_dist_zz"} <= provided
    assert unverified == ("nosuch-dist-zz", "torch")
    lock = Lock(("acme-tools==1.0",), "acme-tools==1.0\n", 0.0)
    checked = SetCheck(lock, provided=provided, unverified=unverified)
    [issue] = issues_of([_Set()], [checked], None)
    assert issue.kind == "unverified-import"
    assert issue.message == (
        "imports 'cv2', which no dependency is known to provide; not verified: the modules of "
        "nosuch-dist-zz, torch were not read (not installed, not in uv's cache, wheel not "
        "fetched); if none provides it, add 'opencv-python'"
    )


@dataclass(frozen=True)
class _Set:
    dependencies: tuple[str, ...] = ("acme-tools==1.0",)
    system_dependencies: tuple[str, ...] = ()
    names: list[str] = field(default_factory=lambda: ["vision"])
    label: str = "vision"
    base: tuple[str, ...] = ()
    project_lock: None = None
    imports: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"vision": ("acmetk.sub", "cv2", "json", "os.path")}
    )
