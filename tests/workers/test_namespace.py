"""The worker's namespace launcher, run for real: a private user and mount namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from openflash.deps.namespace_mode import layer_mode, namespace_env
from openflash.workers.namespace import SETUP_FAILED, overlay_targets

SRC = str(Path(__file__).resolve().parents[2] / "src")

needs_namespaces = pytest.mark.skipif(
    not layer_mode().namespaces, reason="this kernel refuses unprivileged namespaces"
)


def launch(layer: Path | None, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **namespace_env(layer), "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "openflash.workers.namespace", "--exec", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_overlay_targets_follow_merged_usr_and_skip_openflash_files(tmp_path: Path) -> None:
    for name in ("usr/share", "etc/fonts", "openflash", "no-such-top-folder"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    assert overlay_targets(str(tmp_path)) == [
        (str(tmp_path / "etc"), "/etc"),
        (str(tmp_path / "usr"), "/usr"),
    ]


@needs_namespaces
def test_a_layer_shows_at_its_real_paths_inside_only(tmp_path: Path) -> None:
    (tmp_path / "usr/share/openflash-test-data").mkdir(parents=True)
    (tmp_path / "usr/share/openflash-test-data/hello.txt").write_text("from the layer\n")
    (tmp_path / "etc/openflash-test").mkdir(parents=True)
    (tmp_path / "etc/openflash-test/conf").write_text("layer conf\n")
    inside = launch(
        tmp_path,
        "sh",
        "-c",
        "cat /usr/share/openflash-test-data/hello.txt /etc/openflash-test/conf; "
        "id -u; ls /usr/bin/env; touch /usr/share/openflash-test-data/x 2>&1 || echo read-only",
    )
    assert inside.returncode == 0, inside.stderr
    lines = inside.stdout.splitlines()
    assert lines[:2] == ["from the layer", "layer conf"]
    assert lines[2] == str(os.getuid())  # the caller's id, not a fake root
    assert lines[3] == "/usr/bin/env"  # the host's files show through
    assert lines[-1] == "read-only"
    assert not Path("/usr/share/openflash-test-data").exists()  # the host sees nothing
    assert not Path("/etc/openflash-test").exists()


@needs_namespaces
def test_user_code_cannot_unmount_its_layer(tmp_path: Path) -> None:
    (tmp_path / "usr/share/openflash-test-data").mkdir(parents=True)
    done = launch(tmp_path, "sh", "-c", "umount /usr 2>/dev/null && echo unmounted || echo kept")
    assert done.stdout.strip() == "kept"


@needs_namespaces
def test_a_namespace_that_cannot_be_set_up_exits_with_its_status(tmp_path: Path) -> None:
    done = launch(tmp_path / "absent-layer", "true")
    assert done.returncode == SETUP_FAILED
    assert "cannot set up the worker's namespace" in done.stderr
    assert "absent-layer" in done.stderr
