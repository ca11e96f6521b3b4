"""One resolution everywhere: a call, `flash check` and `flash lock` agree on the newest version
a spec allows, whatever uv's cache holds.

The package lives on a package index on loopback (tests/index_server.py, PyPI's layout and
caching headers) beside PyPI, so that a newer release can appear during the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from index_server import serve_index
from openflash.deps.lockfile import LockFile
from openflash.deps.resolve import resolve
from openflash.envs.store import Store

from helpers import make_wheel, run_flash, run_python, write

APP = """
    import asyncio
    from openflash import CpuLiveServerless, remote

    @remote(CpuLiveServerless(name="agree"), dependencies=["openflash-agree-demo<3"])
    def version() -> str:
        import openflash_agree_demo
        return openflash_agree_demo.VERSION

    if __name__ == "__main__":
        print(asyncio.run(version()))
"""


def _release(folder: Path, version: str) -> None:
    files = {"openflash_agree_demo.py": f"VERSION = {version!r}\n"}
    make_wheel(folder, "openflash_agree_demo", version, files)


def test_call_check_and_lock_agree_on_the_newest_whatever_uvs_cache_holds(
    tmp_path: Path, uv_cache: Path, apt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "index"
    _release(folder, "1.0")
    project = tmp_path / "project"
    write(project / "app.py", APP)
    homes = {name: tmp_path / name for name in ("checked", "called")}
    with serve_index(folder) as (url, _):
        monkeypatch.setenv("UV_EXTRA_INDEX_URL", url)
        env = {"UV_EXTRA_INDEX_URL": url, "FLASH_UV_CACHE_DIR": str(uv_cache)}
        env["FLASH_APT_DIR"] = str(apt_dir)
        for home in homes.values():  # both stores, and uv's cache, have seen only 1.0
            old = resolve(("openflash-agree-demo",), store=Store(home), uv_cache=uv_cache, ttl=99)
            assert old.packages["openflash-agree-demo"] == "==1.0"
        _release(folder, "2.0")

        checked = run_flash("check", cwd=project, env={**env, "FLASH_HOME": str(homes["checked"])})
        assert checked.returncode == 0, checked.stdout + checked.stderr
        called = run_python(project / "app.py", env={**env, "FLASH_HOME": str(homes["called"])})
        assert called.stdout.strip() == "2.0", called.stderr
        # A call in the store `flash check` resolved into uses check's resolution:
        after_check = run_python(
            project / "app.py", env={**env, "FLASH_HOME": str(homes["checked"])}
        )
        assert after_check.stdout.strip() == "2.0", after_check.stderr
        locked = run_flash("lock", cwd=project, env={**env, "FLASH_HOME": str(homes["called"])})
        assert locked.returncode == 0, locked.stderr
    [entry] = LockFile.read(project / "flash.lock").entries
    assert {p.name: p.version for p in entry.packages}["openflash-agree-demo"] == "2.0"
