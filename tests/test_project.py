"""Discovery of a project's endpoints, on the served test project."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from openflash.project import discover, project_files

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "apps" / "served"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    shutil.copytree(FIXTURE, root)
    return root


def test_files_honour_gitignore_and_skip_virtualenvs(project: Path) -> None:
    names = {p.relative_to(project).as_posix() for p in project_files(project)}
    assert names == {
        "broken.py",
        "conflict.py",
        "cpu_worker.py",
        "greeter.py",
        "lb_api.py",
        "load_client.py",
        "models.py",
        "single.py",
        "workers/gpu/endpoint.py",
    }


def test_routes_by_file_path_function_and_short_form(project: Path) -> None:
    found = discover(project)
    paths = {r.path: r for r in found.queue}
    assert {
        "/cpu_worker/process",
        "/cpu_worker/add",
        "/cpu_worker/boom",
        "/cpu_worker/nap",
        "/cpu_worker/long_job",
    } <= set(paths)
    assert paths["/cpu_worker/process"].short_path is None  # several functions in the file
    assert paths["/single/shout"].short_path == "/single"  # the only one: short form too
    assert paths["/workers/gpu/endpoint/infer"].short_path == "/workers/gpu/endpoint"
    assert {r.path: r.method for r in found.queue if r.method} == {
        "/models/Tally/bump": "bump",
        "/models/Tally/total": "total",
        "/greeter/Greeter/greet": "greet",
    }
    # Runpod's URLs: functions and class methods counted together, no class segment.
    assert paths["/models/Tally/bump"].short_path == "/models/bump"
    assert paths["/greeter/Greeter/greet"].short_path == "/greeter"
    assert {(r.method, r.path) for r in found.lb} == {
        ("POST", "/lb_api/compute"),
        ("GET", "/lb_api/items/{item_id}"),
        ("PUT", "/lb_api/items/{item_id}"),
        ("DELETE", "/lb_api/items/{item_id}"),
        ("PATCH", "/lb_api/items/{item_id}"),
        ("POST", "/lb_api/fail"),
    }
    assert all(r.endpoint_name == "served-lb" for r in found.lb)


def test_runpod_urls_for_classes_and_functions_in_one_file(tmp_path: Path) -> None:
    (tmp_path / "mixed.py").write_text(
        "from runpod_flash import Endpoint\n"
        "@Endpoint(name='m-fn', cpu='cpu3c-1-2')\n"
        "def stats(x: int) -> int:\n    return x\n"
        "@Endpoint(name='m-a', cpu='cpu3c-1-2')\n"
        "class A:\n    def stats(self) -> int:\n        return 1\n"
        "    def go(self) -> int:\n        return 2\n"
        "@Endpoint(name='m-b', cpu='cpu3c-1-2')\n"
        "class B:\n    def go(self) -> int:\n        return 3\n"
    )
    found = discover(tmp_path, fresh=True)
    # stats is the function's own path, so A.stats keeps only its class path; B.go's short URL
    # is A.go's (the first one defined keeps it).
    assert {r.path: r.short_path for r in found.queue} == {
        "/mixed/stats": None,
        "/mixed/A/go": "/mixed/go",
        "/mixed/A/stats": None,
        "/mixed/B/go": None,
    }


def test_a_broken_module_is_reported_and_the_rest_found(project: Path) -> None:
    found = discover(project)
    [failure] = found.failures
    assert failure.file.name == "broken.py"
    assert (
        "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'" in failure.traceback
    )
    assert found.queue and found.lb


def test_only_files_that_decorate_something_are_imported(project: Path) -> None:
    # load_client.py exits at import; helpers.py and a file with a syntax error show the edges.
    (project / "helpers.py").write_text("open('helpers-ran', 'w').close()\n")
    (project / "typo.py").write_text("@remote(\n")
    (project / "late.py").write_text(
        "from runpod_flash import CpuLiveServerless, Endpoint, remote\n"
        "api = Endpoint(name='late-lb', cpu='cpu3c-1-2')\n"
        "@api.post('/hello')\n"
        "def hello() -> str:\n    return 'hi'\n"
        "def double(x: int) -> int:\n    return 2 * x\n"
        "twice = remote(CpuLiveServerless(name='late-q'))(double)\n"
    )
    found = discover(project)
    skipped = [p.relative_to(project).as_posix() for p in found.skipped]
    assert skipped == ["helpers.py", "load_client.py"]
    assert not (project / "helpers-ran").exists()
    assert sorted(f.file.name for f in found.failures) == ["broken.py", "typo.py"]
    assert ("POST", "/late/hello") in {(lb.method, lb.path) for lb in found.lb}
    assert "/late/twice" in {r.path for r in found.queue}


def test_imported_endpoints_are_served_where_they_are_defined(project: Path) -> None:
    (project / "reexport.py").write_text("from single import shout  # noqa: F401\n")
    found = discover(project)
    assert [r.path for r in found.queue if r.name == "shout"] == ["/single/shout"]


PIPELINE = Path(__file__).resolve().parent / "fixtures" / "apps" / "pipeline"


def test_route_handlers_are_not_queue_functions_and_keep_their_paths(tmp_path: Path) -> None:
    # pipeline.py holds one queue-style function (recurse) beside a route POST /run: the file's
    # short form would put recurse's job submission at /pipeline/run too, so it is not used.
    root = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, root)
    found = discover(root, fresh=True)
    queue = {r.path: r for r in found.queue if r.module == "pipeline"}
    assert list(queue) == ["/pipeline/recurse"]
    assert queue["/pipeline/recurse"].short_path is None
    assert [(lb.method, lb.path) for lb in found.lb] == [("POST", "/pipeline/run")]
