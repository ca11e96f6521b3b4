"""System layers with the real apt: private index, closure relative to a base, extraction, fixups."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openflash.deps.apt import Apt
from openflash.deps.libraries import missing_library, package_for_library
from openflash.deps.system import MULTIARCH, build_layer, distribution_release, resolve_system
from openflash.envs.store import Store
from openflash.errors import SystemDependencyError

from helpers import status_without

HOST_STATUS = Path("/var/lib/dpkg/status")


def host_has(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return done.stdout.endswith(" installed")


@pytest.fixture
def apt(apt_dir: Path) -> Apt:
    return Apt(apt_dir, HOST_STATUS, index_ttl=86400)


def test_the_closure_is_relative_to_the_base_and_exact(tmp_path: Path, apt: Apt) -> None:
    assert not host_has("graphviz")
    lock = resolve_system(("graphviz",), store=Store(tmp_path), apt=apt, ttl=60)
    names = {p.name for p in lock.packages}
    assert {"graphviz", "libgvc6", "libcgraph6"} <= names
    assert not any(host_has(n) for n in names), "a package the host has was put in the layer"
    assert all(p.version and p.arch in ("amd64", "all", "arm64") for p in lock.packages)
    assert lock.release == distribution_release() != "unknown"
    assert (
        lock.key
        and lock.key == resolve_system(("graphviz",), store=Store(tmp_path), apt=apt, ttl=60).key
    )


def test_packages_the_base_has_give_no_layer(tmp_path: Path, apt: Apt) -> None:
    assert host_has("libgl1") and host_has("libglib2.0-0")
    lock = resolve_system(("libgl1", "libglib2.0-0"), store=Store(tmp_path), apt=apt, ttl=60)
    assert lock.packages == () and lock.key == ""
    layer = build_layer(Store(tmp_path), lock, apt)
    assert layer.path is None and layer.paths == {}


def test_graphviz_layer_is_complete_and_shared(tmp_path: Path, apt: Apt) -> None:
    store = Store(tmp_path)
    lock = resolve_system(("graphviz",), store=store, apt=apt, ttl=60)
    layer = build_layer(store, lock, apt)
    assert layer.path == tmp_path / "layers" / lock.key
    plugins = layer.path / "usr/lib" / MULTIARCH / "graphviz"
    assert (plugins / "config6a").is_file(), "dot -c was not run"
    assert layer.env["GVBINDIR"] == str(plugins)
    assert str(layer.path / "usr/bin") in layer.paths["PATH"]
    env = {
        **os.environ,
        **layer.env,
        "PATH": os.pathsep.join([*layer.paths["PATH"], os.environ["PATH"]]),
        "LD_LIBRARY_PATH": os.pathsep.join(layer.paths["LD_LIBRARY_PATH"]),
    }
    png = subprocess.run(
        ["dot", "-Tpng"], input=b"digraph { a -> b }", env=env, capture_output=True, check=True
    ).stdout
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    again = build_layer(store, resolve_system(("graphviz",), store=store, apt=apt, ttl=60), apt)
    assert again == layer
    kinds = [e["kind"] for e in store.events()]
    # built once; each .deb of it unpacked once into the unpacked-deb store, before it
    assert kinds.count("layers") == 1 and kinds[-1] == "layers"
    assert kinds.count("debs") == len(lock.packages)


def test_ffmpeg_layer_has_every_library_folder_on_the_path(tmp_path: Path, apt: Apt) -> None:
    store = Store(tmp_path)
    layer = build_layer(store, resolve_system(("ffmpeg",), store=store, apt=apt, ttl=60), apt)
    assert layer.path is not None
    libs = layer.paths["LD_LIBRARY_PATH"]
    assert libs[0] == str(layer.path / "usr/lib" / MULTIARCH)
    with_objects = {
        str(p.parent) for p in layer.path.rglob("*.so*") if re.search(r"\.so(\.\d+)*$", p.name)
    }
    assert with_objects == set(libs)  # subfolders such as blas/, pulseaudio/ included
    assert len(libs) > 1
    for link in layer.path.rglob("*"):
        if link.is_symlink() and os.path.isabs(os.readlink(link)):
            assert not (layer.path / os.readlink(link).lstrip("/")).exists(), link


def test_alternatives_links_are_made(tmp_path: Path, apt: Apt) -> None:
    assert not host_has("libblas3") and not host_has("liblapack3")
    store = Store(tmp_path)
    layer = build_layer(
        store, resolve_system(("libblas3", "liblapack3"), store=store, apt=apt, ttl=60), apt
    )
    assert layer.path is not None
    for name in ("libblas.so.3", "liblapack.so.3"):
        link = layer.path / "usr/lib" / MULTIARCH / name
        assert link.is_symlink() and link.resolve().is_file(), f"update-alternatives link {name}"
        assert not os.path.isabs(os.readlink(link))


def test_unknown_packages_fail_naming_them(tmp_path: Path, apt: Apt) -> None:
    with pytest.raises(
        SystemDependencyError, match="'openflash-no-such-deb' is not known to apt"
    ) as info:
        resolve_system(("openflash-no-such-deb",), store=Store(tmp_path), apt=apt, ttl=60)
    assert "Unable to locate package openflash-no-such-deb" in info.value.message


def test_a_hidden_base_package_goes_into_the_layer(tmp_path: Path, apt_dir: Path) -> None:
    base = status_without({"wget"}, tmp_path / "base" / "status")
    apt = Apt(apt_dir, base, index_ttl=86400)
    lock = resolve_system(("wget",), store=Store(tmp_path), apt=apt, ttl=60)
    assert [p.name for p in lock.packages] == ["wget"]


def test_the_host_status_is_never_written(tmp_path: Path, apt: Apt) -> None:
    before = HOST_STATUS.stat().st_mtime_ns, HOST_STATUS.read_bytes()
    assert not host_has("libcgraph6")
    store = Store(tmp_path)
    layer = build_layer(store, resolve_system(("libcgraph6",), store=store, apt=apt, ttl=60), apt)
    assert layer.path is not None
    assert (HOST_STATUS.stat().st_mtime_ns, HOST_STATUS.read_bytes()) == before
    assert (apt.root / "state" / "status").read_bytes() == before[1]


def test_a_killed_layer_build_leaves_nothing_and_the_next_succeeds(
    tmp_path: Path, apt_dir: Path
) -> None:
    home = tmp_path / "home"
    script = (
        "import sys; from pathlib import Path\n"
        "from openflash.deps.apt import Apt\n"
        "from openflash.deps.system import build_layer, resolve_system\n"
        "from openflash.envs.store import Store\n"
        f"store = Store(Path({str(home)!r})); apt = Apt(Path({str(apt_dir)!r}), Path('/var/lib/dpkg/status'), 86400)\n"
        "lock = resolve_system(('ffmpeg',), store=store, apt=apt, ttl=60)\n"
        "print('resolved', flush=True)\n"
        "build_layer(store, lock, apt)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "resolved"
    deadline = time.monotonic() + 60
    while not list((home / "tmp").glob("layers-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # well inside extraction
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(home)
    assert not (home / "layers").exists() or not any((home / "layers").iterdir())
    apt = Apt(apt_dir, HOST_STATUS, 86400)
    layer = build_layer(store, resolve_system(("ffmpeg",), store=store, apt=apt, ttl=60), apt)
    assert layer.path is not None and (layer.path / "usr/bin/ffmpeg").is_file()
    assert not list((home / "tmp").glob("layers-*")), "leftovers of the killed build remain"


@pytest.mark.parametrize(
    ("soname", "package"),
    [
        ("libGL.so.1", "libgl1"),
        ("libgthread-2.0.so.0", "libglib2.0-0"),
        ("libsndfile.so.1", "libsndfile1"),
        ("libSM.so.6", "libsm6"),
        ("libXext.so.6", "libxext6"),
        ("libavcodec.so.59", "libavcodec59"),
        ("libfoo2.so.0", "libfoo2-0"),
        ("libportaudio.so.2", "libportaudio2"),
    ],
)
def test_missing_libraries_map_to_packages(soname: str, package: str) -> None:
    assert package_for_library(soname) == package


def test_loader_errors_name_the_library() -> None:
    assert (
        missing_library("ImportError: libGL.so.1: cannot open shared object file: No such file")
        == "libGL.so.1"
    )
    assert (
        missing_library("OSError: libsndfile.so.1: cannot open shared object file")
        == "libsndfile.so.1"
    )
    assert missing_library("ValueError: nope") is None


def test_a_cached_closure_naming_vanished_versions_is_resolved_again(
    tmp_path: Path, apt: Apt
) -> None:
    from openflash.deps.system import system_layer

    assert not host_has("libcdt5")
    store = Store(tmp_path)
    lock = resolve_system(("libcdt5",), store=store, apt=apt, ttl=3600)
    [cache_file] = store.resolutions.glob("system-*.json")
    data = json.loads(cache_file.read_text())
    data["packages"][0][1] = "0.0-gone"  # as if a security update had replaced that version
    cache_file.write_text(json.dumps(data))
    layer = system_layer(("libcdt5",), store=store, apt=apt, ttl=3600)
    assert layer.key == lock.key and layer.path is not None


def test_a_missing_base_status_is_explained(tmp_path: Path, apt_dir: Path) -> None:
    apt = Apt(apt_dir, tmp_path / "no-status", index_ttl=86400)
    with pytest.raises(
        SystemDependencyError, match="cannot read the base system's package list"
    ) as info:
        resolve_system(("wget",), store=Store(tmp_path), apt=apt, ttl=60)
    assert "FLASH_SYSTEM_BASE" in info.value.hint


def test_a_deb_that_does_not_match_the_index_is_removed_before_extraction(
    tmp_path: Path, apt: Apt
) -> None:
    assert not host_has("tree")
    lock = resolve_system(("tree",), store=Store(tmp_path), apt=apt, ttl=60)
    with apt.locked():
        debs = apt.download(lock.packages)  # verified against the index: accepted
        tampered = debs[0]
        tampered.write_bytes(tampered.read_bytes() + b"\0")
        with pytest.raises(SystemDependencyError) as info:
            apt.verify(lock.packages, debs)
    message = str(info.value)
    assert f"{tampered} does not match apt's package index" in message
    assert "its SHA256 is" in message and "the index gives" in message
    assert not tampered.exists(), "removed, so that the next build downloads it afresh"
    assert "call again" in info.value.hint
    layer = build_layer(Store(tmp_path), lock, apt)  # downloaded again, verified, built
    assert layer.path is not None and (layer.path / "usr/bin/tree").exists()


def test_apt_keeps_its_binary_package_cache_in_its_own_folder(tmp_path: Path, apt: Apt) -> None:
    """Debian's container images switch apt's binary cache off (``Dir::Cache::pkgcache ""`` in
    /etc/apt/apt.conf.d/docker-clean), so that every apt-cache call parses the whole package
    index again (about 1 s of CPU here, in each first layer's check of its .debs): openflash's
    private apt keeps its own ``cache/pkgcache.bin``, built once and reused while the index and
    status stay the same."""
    lock = resolve_system(("tree",), store=Store(tmp_path), apt=apt, ttl=60)
    cache = apt.root / "cache" / "pkgcache.bin"
    with apt.locked():
        apt.download(lock.packages)  # its check of the .debs asks apt-cache
        assert cache.is_file()
        built = cache.stat()
        apt.download(lock.packages)
    again = cache.stat()
    assert (again.st_ino, again.st_mtime_ns) == (built.st_ino, built.st_mtime_ns), "reused"
    dumped = subprocess.run(
        ["apt-config", *apt.options(), "dump"], capture_output=True, text=True, check=True
    ).stdout
    assert f'Dir::Cache::pkgcache "{cache}";' in dumped
