"""system_dependencies through the public API: real apt layers, real workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, RemoteError, SystemDependencyError, remote
from openflash.runtime.process import get_runtime

from helpers import status_without


def run(coro):
    return asyncio.run(coro)


@pytest.mark.usefixtures("flash_home")
def test_graphviz_renders_a_png() -> None:
    @remote(CpuLiveServerless(name="sys-graphviz"), system_dependencies=["graphviz"])
    def render(source: str) -> bytes:
        import subprocess

        return subprocess.run(
            ["dot", "-Tpng"], input=source.encode(), capture_output=True, check=True
        ).stdout

    png = run(render("digraph { rankdir=LR; openflash -> layers -> workers }"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 100 and height > 20


@pytest.mark.usefixtures("flash_home")
def test_ffmpeg_encodes_a_test_clip() -> None:
    @remote(CpuLiveServerless(name="sys-ffmpeg"), system_dependencies=["ffmpeg"])
    def encode() -> dict:
        import os
        import shutil
        import subprocess
        import tempfile

        out = os.path.join(tempfile.mkdtemp(), "clip.mp4")
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=duration=1:size=320x240:rate=25",
                "-pix_fmt",
                "yuv420p",
                out,
            ],
            check=True,
        )
        probe = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=nb_read_frames",
                "-of",
                "csv=p=0",
                out,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return {
            "bytes": os.path.getsize(out),
            "frames": int(probe.stdout.strip()),
            "ffmpeg": shutil.which("ffmpeg"),
        }

    result = run(encode())
    assert result["bytes"] > 1000 and result["frames"] == 25
    assert "/layers/" in result["ffmpeg"]  # the host has no ffmpeg; the layer's is used


@pytest.mark.usefixtures("flash_home")
def test_opencv_with_libgl_from_the_host_needs_no_layer() -> None:
    @remote(
        CpuLiveServerless(name="sys-cv2"),
        dependencies=["opencv-python==4.10.0.84", "numpy<2"],
        system_dependencies=["libgl1", "libglib2.0-0"],
    )
    def cv2_version() -> tuple[str, list[str]]:
        import cv2

        maps = __import__("pathlib").Path("/proc/self/maps").read_text()
        return cv2.__version__, sorted(
            {line.split()[-1] for line in maps.splitlines() if "libGL.so" in line}
        )

    version, libgl = run(cv2_version())
    assert version.startswith("4.10")
    assert libgl and all("/layers/" not in path for path in libgl)  # the host's own copy
    stats = get_runtime()._endpoint_pools[cv2_version.endpoint]
    assert stats.spec.paths == {}  # nothing duplicated: the host has both packages


def test_opencv_loads_the_layers_libgl_when_the_base_lacks_it(
    fresh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "FLASH_SYSTEM_BASE", str(status_without({"libgl1"}, tmp_path / "base" / "status"))
    )

    @remote(
        CpuLiveServerless(name="sys-cv2-layer"),
        dependencies=["opencv-python==4.10.0.84", "numpy<2"],
        system_dependencies=["libgl1", "libglib2.0-0"],
    )
    def libgl_paths() -> list[str]:
        import cv2  # noqa: F401

        maps = __import__("pathlib").Path("/proc/self/maps").read_text()
        return sorted({line.split()[-1] for line in maps.splitlines() if "libGL.so" in line})

    paths = run(libgl_paths())
    assert paths and all(p.startswith(str(fresh_home / "layers")) for p in paths), paths


def test_wget_and_git_from_the_layer(
    fresh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "FLASH_SYSTEM_BASE", str(status_without({"wget", "git"}, tmp_path / "base" / "status"))
    )

    @remote(CpuLiveServerless(name="sys-tools"), system_dependencies=["wget", "git"])
    def tools() -> dict:
        import shutil
        import subprocess

        def version(tool: str) -> str:
            return subprocess.run(
                [tool, "--version"], capture_output=True, text=True, check=True
            ).stdout

        return {
            "wget": shutil.which("wget"),
            "git": shutil.which("git"),
            "wget_version": version("wget").splitlines()[0],
            "git_version": version("git").strip(),
        }

    found = run(tools())
    layers = str(fresh_home / "layers")
    assert found["wget"].startswith(layers) and found["git"].startswith(layers)
    assert found["wget_version"].startswith("GNU Wget")
    assert found["git_version"].startswith("git version")


@pytest.mark.parametrize(
    "bad", ["ffmpeg; rm -rf /", "$(id)", "-o APT::X=1", "ffmpeg && curl x", "`id`"]
)
def test_injection_attempts_raise_at_decoration(bad: str) -> None:
    with pytest.raises(SystemDependencyError, match="is not a Debian package name"):
        remote(CpuLiveServerless(name="sys-bad"), system_dependencies=["wget", bad])


def test_an_unknown_package_fails_before_any_worker_starts(fresh_home: Path) -> None:
    @remote(
        CpuLiveServerless(name="sys-unknown"),
        system_dependencies=["ffmpeg", "openflash-no-such-deb"],
    )
    def never() -> None: ...

    with pytest.raises(
        SystemDependencyError, match="'openflash-no-such-deb' is not known to apt"
    ) as info:
        run(never())
    assert "endpoint 'sys-unknown'" in info.value.message
    assert get_runtime()._endpoint_pools == {}
    assert not (fresh_home / "layers").exists()


@pytest.mark.usefixtures("flash_home")
def test_a_missing_shared_library_names_the_package_to_add(tmp_path: Path) -> None:
    @remote(CpuLiveServerless(name="sys-missing-lib"))
    def load() -> None:
        import ctypes

        ctypes.CDLL("libcdt.so.5")  # the host lacks libcdt5 (a graphviz library)

    with pytest.raises(OSError) as info:
        run(load())
    assert isinstance(info.value, RemoteError)
    assert info.value.hint == (
        'libcdt.so.5 is in the Debian package "libcdt5": add it to '
        "system_dependencies=[...] of endpoint 'sys-missing-lib'"
    )

    @remote(CpuLiveServerless(name="sys-with-lib"), system_dependencies=["libcdt5"])
    def load_with_layer() -> str:
        import ctypes

        ctypes.CDLL("libcdt.so.5")
        maps = __import__("pathlib").Path("/proc/self/maps").read_text()
        return next(line.split()[-1] for line in maps.splitlines() if "libcdt.so" in line)

    assert "/layers/" in run(load_with_layer())


@pytest.mark.skipif(os.geteuid() != 0, reason="host mode installs as root")
def test_host_mode_uses_apt_on_the_host(flash_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only with packages the host already has, so that the machine is left as it was.
    monkeypatch.setenv("FLASH_SYSTEM_DEPS", "host")

    @remote(CpuLiveServerless(name="sys-host"), system_dependencies=["wget"])
    def which_wget() -> str:
        import shutil

        return shutil.which("wget")

    assert run(which_wget()) == "/usr/bin/wget"
    assert get_runtime()._endpoint_pools[which_wget.endpoint].spec.paths == {}

    @remote(CpuLiveServerless(name="sys-host-bad"), system_dependencies=["openflash-no-such-deb"])
    def never() -> None: ...

    with pytest.raises(SystemDependencyError, match="not known to apt"):
        run(never())


def test_layers_are_shared_between_endpoints(fresh_home: Path) -> None:
    def gvpath() -> str:
        import os

        return os.environ["GVBINDIR"]

    a = remote(CpuLiveServerless(name="sys-share-a"), system_dependencies=["graphviz"])(gvpath)
    b = remote(CpuLiveServerless(name="sys-share-b"), system_dependencies=["graphviz"])(gvpath)
    assert run(a()) == run(b())
    assert len(list((fresh_home / "layers").iterdir())) == 1


def test_the_dpkg_status_is_untouched_by_a_layer_build() -> None:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "ffmpeg"], capture_output=True, text=True
    )
    assert "installed" not in done.stdout  # the layers above did not install ffmpeg on the host
