"""pip options in a dependency list say what to do instead; uv's own variables are honoured.

The private index is a loopback index with basic auth (tests/index_server.py): no private
index can be reached from here. Real uv resolves against it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from index_server import serve_index
from openflash._settings import Settings
from openflash.deps.specs import normalize_dependencies
from openflash.errors import DependencyError
from openflash.prepare import Preparer

from helpers import make_wheel

# /work/shared/cases/05_pip_options_in_list.py, each with what its hint must say to do instead.
CASES = {
    "--extra-index-url https://download.pytorch.org/whl/cpu": [
        "set UV_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu",
        "'torch==2.4.1+cpu'",
    ],
    "--index-url=https://download.pytorch.org/whl/cpu": [
        "set UV_INDEX_URL=https://download.pytorch.org/whl/cpu"
    ],
    "--no-build-isolation": ["set UV_NO_BUILD_ISOLATION=1"],
    "--pre": ["set UV_PRERELEASE=allow"],
    "-r requirements.txt": ["dependencies=openflash.requirements('requirements.txt')"],
    "six==1.17.0 --hash=sha256:" + "0" * 64: ["openflash.requirements('requirements.txt')"],
}


@pytest.mark.parametrize("entry", list(CASES))
def test_a_pip_option_in_the_list_is_refused_with_what_to_do_instead(entry: str) -> None:
    with pytest.raises(DependencyError, match="is not a valid requirement") as info:
        normalize_dependencies([entry, "six==1.17.0"])
    assert repr(entry) in str(info.value)
    for wanted in CASES[entry]:
        assert wanted in info.value.hint


def test_credentials_in_an_option_never_reach_the_error() -> None:
    with pytest.raises(DependencyError) as info:
        normalize_dependencies(["--extra-index-url https://me:s3cret@pkgs.example.com/simple"])
    assert "UV_EXTRA_INDEX_URL=https://***@pkgs.example.com/simple" in info.value.hint
    assert "s3cret" not in str(info.value)
    assert "'--extra-index-url https://***@pkgs.example.com/simple'" in info.value.message


def test_uv_cache_dir_is_the_default_cache_and_flash_uv_cache_dir_wins(tmp_path: Path) -> None:
    home = {"FLASH_HOME": str(tmp_path / "home")}
    own = Settings.from_env({**home, "UV_CACHE_DIR": str(tmp_path / "uv")})
    assert own.uv_cache_dir == tmp_path / "uv"
    both = {**home, "UV_CACHE_DIR": str(tmp_path / "uv"), "FLASH_UV_CACHE_DIR": str(tmp_path / "f")}
    assert Settings.from_env(both).uv_cache_dir == tmp_path / "f"
    assert Settings.from_env(home).uv_cache_dir == tmp_path / "home" / "uv-cache"


def test_uv_index_variables_are_honoured_and_key_the_resolution_without_the_password(
    tmp_path: Path, fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "private"
    make_wheel(folder, "acme_private", "1.0", {"acme_private.py": "X = 1\n"})
    make_wheel(folder, "acme_private", "2.0", {"acme_private.py": "X = 2\n"})
    specs = normalize_dependencies(["acme-private"])
    settings = dataclasses.replace(Settings.from_env(), resolve_ttl=3600)
    with serve_index(folder, auth="alice:s3cret-pw") as (url, requests):
        private = url.replace("http://", "http://alice:s3cret-pw@")
        # Without the variable, PyPI alone is asked: the private package is unknown.
        with pytest.raises(DependencyError, match="'acme-private' was not found"):
            Preparer(settings).resolve(specs)
        monkeypatch.setenv("UV_INDEX_URL", private)
        lock = Preparer(settings).resolve(specs)  # the failure above is not a cached answer
        assert lock.text == "acme-private==2.0\n"
        assert any(r.startswith("/simple/acme-private") for r in requests)
        monkeypatch.setenv("UV_INDEX_URL", private)
        monkeypatch.setenv("UV_EXCLUDE_NEWER", "2000-01-01T00:00:00Z")
        with pytest.raises(DependencyError) as info:  # another key: uv is asked again
            Preparer(settings).resolve(specs)
        assert "s3cret-pw" not in str(info.value)
    for file in fresh_home.rglob("*"):
        if file.is_file() and "uv-cache" not in file.parts:
            assert b"s3cret-pw" not in file.read_bytes(), file
