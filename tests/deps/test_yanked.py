"""A pin of a yanked release (PEP 592) installs, as uv and pip install it, with a warning: at each
call, in `flash check`'s report and from `flash lock`. Real uv, real workers; the index is a
loopback index (tests/index_server.py) serving one release with ``data-yanked``.
"""

from __future__ import annotations

import json
from pathlib import Path

from index_server import serve_index
from openflash.deps.resolve import yanked_warnings

from helpers import make_wheel, run_flash, run_python, write

SCRIPT = """
import asyncio, sys
from openflash import CpuLiveServerless, remote

INDEX = {index!r}

@remote(CpuLiveServerless(name="pinned"), dependencies=["acme-yank==1.1"], index_url=INDEX)
def pinned() -> int:
    import acme_yank
    return acme_yank.X

@remote(CpuLiveServerless(name="floating"), dependencies=["acme-yank"], index_url=INDEX)
def floating() -> int:
    import acme_yank
    return acme_yank.X

if __name__ == "__main__":
    print("pinned:", asyncio.run(pinned()), "floating:", asyncio.run(floating()))
"""

WARNING = (
    "acme-yank==1.1 is yanked from its index (reason: 'broken import'): pin another version, "
    "unless you mean to install this one"
)


def test_a_yanked_pin_installs_with_a_warning_at_each_call_check_and_lock(
    tmp_path: Path, fresh_home: Path
) -> None:
    folder = tmp_path / "index"
    make_wheel(folder, "acme_yank", "1.0", {"acme_yank.py": "X = 1\n"})
    make_wheel(folder, "acme_yank", "1.1", {"acme_yank.py": "X = 2\n"})
    yanked = {"acme_yank-1.1-py3-none-any.whl": "broken import"}
    with serve_index(folder, yanked=yanked) as (index, _):
        write(tmp_path / "app.py", SCRIPT.format(index=index))
        for _ in range(2):  # the second process reuses the cached resolution: warned again
            done = run_python(tmp_path / "app.py")
            assert done.returncode == 0, done.stderr
            # The exact pin gets the yanked release; a floating spec does not.
            assert "pinned: 2 floating: 1" in done.stdout
            assert done.stderr.count(WARNING) == 1, done.stderr

        checked = run_flash("check", "--json", str(tmp_path), cwd=tmp_path)
        report = json.loads(checked.stdout)
        found = [i for i in report["issues"] if i["kind"] == "yanked"]
        assert found == [
            {"level": "warning", "kind": "yanked", "endpoints": ["pinned"], "message": WARNING}
        ], report

        locked = run_flash("lock", str(tmp_path), cwd=tmp_path)
        assert locked.returncode == 0, locked.stderr
        assert WARNING in locked.stderr
        assert "acme-yank==1.1" in (tmp_path / "flash.lock").read_text()


def test_yanked_warnings_parses_uv_with_and_without_a_reason() -> None:
    stderr = (
        "Resolved 2 packages in 93ms\n"
        'warning: `acme-yank==1.1` is yanked (reason: "broken import")\n'
        "warning: `other==2.0` is yanked\n"
    )
    assert yanked_warnings(stderr) == (
        WARNING,
        "other==2.0 is yanked from its index: pin another version, unless you mean to install "
        "this one",
    )
    assert yanked_warnings("Resolved 1 package in 3ms\n") == ()
