"""Volumes: NetworkVolume(name=...) is a folder of FLASH_VOLUMES that every endpoint naming it
sees at /runpod-volume (in its namespace) or at FLASH_VOLUME_PATH (the relocated mode); real
workers, real namespaces; the host's / never gets a /runpod-volume."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from tests.helpers import run_flash

from openflash import CpuLiveServerless, Endpoint, NetworkVolume, remote
from openflash.deps.namespace_mode import layer_mode
from openflash.errors import ConfigError

namespaces = pytest.mark.skipif(
    not layer_mode().namespaces, reason="this kernel refuses unprivileged namespaces"
)


@remote(CpuLiveServerless(name="volume-writer", networkVolume=NetworkVolume(name="shared-data")))
def write(name: str, text: str) -> dict:
    import os

    folder = os.environ["FLASH_VOLUME_PATH"]
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)
    return {"folder": folder, "listed": sorted(os.listdir(folder))}


@Endpoint(name="volume-reader", cpu="cpu3g-1-4", volume="shared-data")
def read(name: str) -> dict:
    import os

    folder = os.environ["FLASH_VOLUME_PATH"]
    with open(os.path.join(folder, name)) as f:
        return {"folder": folder, "text": f.read(), "runpod": os.path.isdir("/runpod-volume")}


@namespaces
def test_two_endpoints_share_a_volume_at_runpod_volume(flash_home: Path) -> None:
    host_had_it = os.path.exists("/runpod-volume")
    written = asyncio.run(write("note.txt", "from the writer"))
    assert written["folder"] == "/runpod-volume"
    assert "note.txt" in written["listed"]
    seen = asyncio.run(read("note.txt"))
    assert seen == {"folder": "/runpod-volume", "text": "from the writer", "runpod": True}
    on_disk = flash_home / "volumes" / "shared-data" / "note.txt"
    assert on_disk.read_text() == "from the writer"
    assert os.path.exists("/runpod-volume") == host_had_it  # the host's root is untouched
    home = {"FLASH_HOME": str(flash_home), "COLUMNS": "200"}
    listed = json.loads(run_flash("env", "ls", "--json", cwd=flash_home, env=home).stdout)
    # The session store may hold other tests' volumes too: this one is listed, with its file.
    volumes = {r["key"]: r for r in listed if r["kind"] == "volume"}
    assert "shared-data" in volumes and volumes["shared-data"]["files"] >= 1
    table = run_flash("env", "ls", cwd=flash_home, env=home).stderr
    assert "volumes (never pruned)" in table and "shared-data" in table
    assert "system layers: namespace mode" in table


def test_the_relocated_mode_names_the_volume_folder(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLASH_NAMESPACES", "off")
    monkeypatch.setenv("FLASH_VOLUMES", str(tmp_path / "my-volumes"))
    written = asyncio.run(write("relocated.txt", "no namespace"))
    folder = tmp_path / "my-volumes" / "shared-data"
    assert written["folder"] == str(folder)
    assert not folder.is_symlink()
    assert asyncio.run(read("relocated.txt"))["text"] == "no namespace"
    assert (folder / "relocated.txt").read_text() == "no namespace"


def test_a_volume_name_that_is_no_folder_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'\.\./etc'"):
        NetworkVolume(name="../etc")
    with pytest.raises(ConfigError, match="'a/b'"):
        Endpoint(name="bad-volume", volume="a/b")
