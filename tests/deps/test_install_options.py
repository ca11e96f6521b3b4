"""Install options per endpoint: find-links, a private index with basic auth, build-time
dependencies, the project's [tool.openflash] defaults. Real uv, real workers.

The private index is a loopback index with basic auth (tests/index_server.py): no private index
can be reached from here. Its password must never appear in output, errors, the lock, the
preparation's status (what the dashboard shows) or the store.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from index_server import serve_index
from openflash import remote
from openflash._settings import Settings
from openflash.deps.project_defaults import project_options
from openflash.deps.specs import normalize_dependencies
from openflash.envs.uv_options import uv_options
from openflash.errors import ConfigError, FlashError
from openflash.prepare import DependencyKey, Preparer

from helpers import make_wheel, run_flash, run_python, write

PASSWORD = "s3cret-pw-7731"

SCRIPT = """
import asyncio, sys
from openflash import CpuLiveServerless, Endpoint, remote

@remote(CpuLiveServerless(name="linked"), dependencies=["acme-linked"], find_links=["wheels"])
def linked() -> int:
    import acme_linked
    return acme_linked.X

@Endpoint(name="private", dependencies=["acme-private"], index_url=sys.argv[1])
def private() -> int:
    import acme_private
    return acme_private.X

@remote(CpuLiveServerless(name="wrong"), dependencies=["acme-private"], index_url=sys.argv[2])
def wrong() -> int:
    return 0

print("linked:", asyncio.run(linked()))
print("private:", asyncio.run(private()))
try:
    asyncio.run(wrong())
except Exception as e:
    print("wrong:", type(e).__name__, e)
"""


def _files_holding(root: Path, secret: bytes) -> list[Path]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                found.append(path)
    return found


def test_find_links_and_a_private_index_per_endpoint_never_show_the_password(
    tmp_path: Path, fresh_home: Path
) -> None:
    make_wheel(tmp_path / "wheels", "acme_linked", "1.0", {"acme_linked.py": "X = 1\n"})
    make_wheel(tmp_path / "private", "acme_private", "2.0", {"acme_private.py": "X = 2\n"})
    script = write(tmp_path / "app.py", SCRIPT)
    with serve_index(tmp_path / "private", auth=f"alice:{PASSWORD}") as (index, requests):
        url = index
        good = url.replace("http://", f"http://alice:{PASSWORD}@")
        bad = url.replace("http://", "http://alice:wrong-pw-4411@")
        done = run_python(script, good, bad)
        assert done.returncode == 0, done.stderr
        assert any(r.startswith("/simple/acme-private") for r in requests)
        # flash lock of the same project: the lock pins the private package, no credentials.
        write(
            tmp_path / "proj" / "main.py",
            SCRIPT.split("print(")[0]
            .replace("sys.argv[1]", repr(good))
            .replace("sys.argv[2]", repr(good)),
        )
        write(tmp_path / "proj" / "pyproject.toml", "[project]\nname='p'\nversion='0'\n")
        (tmp_path / "proj" / "wheels").symlink_to(tmp_path / "wheels")
        locked = run_flash("lock", cwd=tmp_path / "proj")
    lines = done.stdout.splitlines()
    assert lines[:2] == ["linked: 1", "private: 2"]
    assert lines[2].startswith("wrong: "), done.stdout
    # uv's reason is passed through, the index named without its credentials.
    assert f"An index URL ({url}) could not be queried" in done.stdout
    assert "401 Unauthorized" in done.stdout
    assert locked.returncode == 0, locked.stderr
    lock_text = (tmp_path / "proj" / "flash.lock").read_text()
    assert "acme-private" in lock_text and "acme-linked" in lock_text
    for text in (done.stdout, done.stderr, locked.stdout, locked.stderr, lock_text):
        assert PASSWORD not in text and "wrong-pw-4411" not in text
    assert _files_holding(fresh_home, PASSWORD.encode()) == []
    assert _files_holding(fresh_home, b"wrong-pw-4411") == []


def test_a_failed_private_resolution_shows_no_password_in_errors_status_or_keys(
    tmp_path: Path, fresh_home: Path
) -> None:
    make_wheel(tmp_path / "private", "acme_private", "1.0", {"acme_private.py": "X = 1\n"})
    preparer = Preparer(Settings.from_env())
    specs = normalize_dependencies(["acme-private"])
    with serve_index(tmp_path / "private", auth=f"alice:{PASSWORD}") as (url, _):
        bad = uv_options(index_url=url.replace("http://", "http://alice:not-it-9@"))
        good = uv_options(index_url=url.replace("http://", f"http://alice:{PASSWORD}@"))
        key = DependencyKey(specs, (), options=bad)
        with pytest.raises(FlashError) as info:
            preparer.build(key)
        assert preparer.build(DependencyKey(specs, (), options=good)).lock.text == (
            "acme-private==1.0\n"
        )
    shown = [str(info.value), info.value.hint or "", repr(key), str(preparer.status(key).as_dict())]
    shown.append(str(preparer.status(DependencyKey(specs, (), options=good)).as_dict()))
    for text in shown:
        assert "not-it-9" not in text and PASSWORD not in text
    assert "***@127.0.0.1" in repr(key)
    # Different options, different environments (and keys).
    assert DependencyKey(specs, (), options=bad) != DependencyKey(specs, (), options=good)


def _sdist_needing(folder: Path, helper: str) -> None:
    """An sdist whose setup.py imports ``helper``, which its build-system does not list."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
        'build-backend = "setuptools.build_meta"\n'
        '[project]\nname = "needs-helper"\nversion = "1.0"\n',
        "setup.py": f"import {helper}\nfrom setuptools import setup\n"
        "setup(py_modules=['needs_helper'])\n",
        "needs_helper.py": f"import {helper}\nVALUE = {helper}.VALUE\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: needs-helper\nVersion: 1.0\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "needs_helper-1.0.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"needs_helper-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


BUILD_SCRIPT = """
import asyncio, sys
from openflash import CpuLiveServerless, remote

extra = {"needs-helper": ["buildhelper"]} if sys.argv[1] == "ordered" else None

@remote(
    CpuLiveServerless(name="build-" + sys.argv[1]),
    dependencies=["needs-helper", "buildhelper"],
    find_links=["links"],
    extra_build_dependencies=extra,
)
def value() -> str:
    import needs_helper
    return needs_helper.VALUE

print("value:", asyncio.run(value()))
"""


def test_a_build_time_dependency_is_ordered_by_extra_build_dependencies(
    tmp_path: Path, fresh_home: Path
) -> None:
    # A fresh name per run: uv caches built wheels by the sdist's hash.
    helper = f"buildhelper{os.getpid()}"
    _sdist_needing(tmp_path / "links", helper)
    make_wheel(tmp_path / "links", "buildhelper", "1.0", {f"{helper}.py": "VALUE = 'built'\n"})
    script = write(tmp_path / "app.py", BUILD_SCRIPT)
    without = run_python(script, "isolated")
    assert without.returncode != 0
    assert f"No module named '{helper}'" in without.stderr + without.stdout
    ordered = run_python(script, "ordered")
    assert ordered.returncode == 0, ordered.stderr
    assert ordered.stdout == "value: built\n"


def test_project_defaults_come_from_tool_openflash_and_endpoints_win(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        """
        [tool.openflash]
        index-url = "https://alice:tok@pkgs.example.com/simple"
        find-links = ["wheels"]
        torch-backend = "cpu"
        prerelease = "allow"
        extra-build-dependencies = { flash-attn = ["torch"] }
        no-build-isolation = ["flash-attn"]
        """,
    )
    (tmp_path / "wheels").mkdir()
    (tmp_path / "src").mkdir()
    defaults = project_options(tmp_path / "src")
    assert defaults.index_url == "https://alice:tok@pkgs.example.com/simple"
    assert defaults.find_links == (str(tmp_path / "wheels"),)
    assert defaults.extra_build_dependencies == (("flash-attn", ("torch",)),)
    assert "tok" not in repr(defaults) and "***@pkgs.example.com" in repr(defaults)
    mine = uv_options(torch_backend="cu121").over(defaults)
    assert (mine.torch_backend, mine.prerelease) == ("cu121", "allow")

    write(tmp_path / "pyproject.toml", "[tool.openflash]\nindex_urls = ['x']\n")
    with pytest.raises(ConfigError, match="no setting 'index_urls'") as info:
        project_options(tmp_path / "src")
    assert "did you mean 'index-url'" in (info.value.hint or "")


def test_options_are_checked_at_decoration_and_misspelt_ones_get_a_suggestion() -> None:
    with pytest.raises(TypeError, match="did you mean 'extra_index_urls'"):
        remote(extra_index_url="https://x.example.com/simple")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="torch_backend 'cuda'") as info:
        remote(torch_backend="cuda")(lambda: 0)
    assert "cu121" in (info.value.hint or "")
    with pytest.raises(ConfigError, match=r"index_url must be an http\(s\)") as info:
        remote(index_url="https://u:pw9@")(lambda: 0)
    assert "pw9" not in str(info.value)
    with pytest.raises(ConfigError, match="prerelease 'sometimes'"):
        remote(prerelease="sometimes")(lambda: 0)
