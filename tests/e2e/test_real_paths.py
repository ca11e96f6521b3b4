"""System layers at their real paths: real apt layers, real namespaces, real workers.

tesseract reads its data from a compiled-in /usr path; pyzbar finds libzbar with
ctypes.util.find_library (the layer's ld.so cache). Both work with the layer at its real paths
(namespace mode); the relocated mode (FLASH_NAMESPACES=off) keeps what it promises: tesseract
through TESSDATA_PREFIX, find_library through workers/library_shim.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from openflash import CpuLiveServerless, RemoteError, remote
from openflash.deps.namespace_mode import layer_mode

pytestmark = pytest.mark.skipif(
    not layer_mode().namespaces, reason="this kernel refuses unprivileged namespaces"
)


def run(coro):
    return asyncio.run(coro)


def _usr_fingerprint() -> str:
    """What the host's /usr/share/tesseract-ocr and libzbar and dpkg status look like."""
    seen = [str(p) for p in Path("/usr/share").glob("tesseract-ocr*")]
    seen += [str(p) for p in Path("/usr/lib").rglob("libzbar*")]
    status = Path("/var/lib/dpkg/status").read_bytes()
    return hashlib.sha256(("\n".join(sorted(seen))).encode() + status).hexdigest()


@remote(
    CpuLiveServerless(name="real-ocr"),
    dependencies=["pytesseract==0.3.13", "Pillow==11.0.0"],
    system_dependencies=["tesseract-ocr", "tesseract-ocr-eng"],
)
def ocr(text: str) -> dict:
    import os

    import pytesseract
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (520, 110), 255)
    ImageDraw.Draw(img).text((14, 24), text, fill=0, font=ImageFont.load_default(size=56))
    return {
        "text": pytesseract.image_to_string(img).strip(),
        "data": os.path.isdir("/usr/share/tesseract-ocr"),
    }


@remote(
    CpuLiveServerless(name="real-zbar"),
    dependencies=["pyzbar==0.1.9", "segno==1.6.1", "Pillow==11.0.0"],
    system_dependencies=["libzbar0"],
)
def decode_qr(payload: str) -> dict:
    import ctypes.util
    import io

    import segno
    from PIL import Image
    from pyzbar import pyzbar

    buffer = io.BytesIO()
    segno.make(payload, error="m").save(buffer, kind="png", scale=8)
    found = pyzbar.decode(Image.open(io.BytesIO(buffer.getvalue())))
    return {
        "find_library": ctypes.util.find_library("zbar"),
        "decoded": [r.data.decode() for r in found],
    }


@pytest.mark.usefixtures("flash_home")
def test_tesseract_reads_text_the_test_renders_and_the_host_is_untouched() -> None:
    before = _usr_fingerprint()
    out = run(ocr("HELLO 42"))
    assert out["data"] is True
    assert "HELLO 42" in out["text"]
    assert _usr_fingerprint() == before


@pytest.mark.usefixtures("flash_home")
def test_pyzbar_finds_its_library_and_decodes_a_qr_code() -> None:
    host_has_zbar = any(Path("/usr/lib").rglob("libzbar.so*"))
    out = run(decode_qr("openflash real paths"))
    assert out["find_library"] == "libzbar.so.0"
    assert out["decoded"] == ["openflash real paths"]
    assert any(Path("/usr/lib").rglob("libzbar.so*")) == host_has_zbar


@remote(CpuLiveServerless(name="real-no-layer"))
def find_library_of_a_worker_without_layer() -> dict:
    import ctypes.util
    import os

    return {
        "module": ctypes.util.find_library.__module__,
        "variable": os.environ.get("OPENFLASH_LIBRARY_DIRS"),
    }


@pytest.mark.usefixtures("flash_home")
def test_relocated_mode_keeps_tesseract_and_find_library_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASH_NAMESPACES", "off")
    out = run(ocr("RELOCATED 7"))
    assert out["data"] is False  # nothing at the real path: the layer stays in the store
    assert "RELOCATED 7" in out["text"]  # TESSDATA_PREFIX points into the layer
    host_has_zbar = any(Path("/usr/lib").rglob("libzbar.so*"))
    qr = run(decode_qr("relocated zbar"))  # the shim: the layer's library folders first
    assert qr == {"find_library": "libzbar.so.0", "decoded": ["relocated zbar"]}
    assert any(Path("/usr/lib").rglob("libzbar.so*")) == host_has_zbar
    plain = run(find_library_of_a_worker_without_layer())  # no layer: CPython's own
    assert plain == {"module": "ctypes.util", "variable": None}


@remote(
    CpuLiveServerless(name="real-ocr"),
    dependencies=["pytesseract==0.3.13", "Pillow==11.0.0"],
    system_dependencies=["tesseract-ocr", "tesseract-ocr-eng"],
)
def read_traineddata() -> int:
    with open("/usr/share/tesseract-ocr/5/tessdata/eng.traineddata", "rb") as f:
        return len(f.read(16))


@pytest.mark.usefixtures("flash_home")
def test_a_missing_file_under_usr_gets_a_hint_naming_the_mode_and_the_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASH_NAMESPACES", "off")  # (at its real path, the namespace mode reads it)
    with pytest.raises(RemoteError) as caught:
        run(read_traineddata())
    hint = caught.value.hint or ""
    assert "/usr/share/tesseract-ocr/5/tessdata/eng.traineddata is a system file" in hint
    assert "tesseract-ocr, tesseract-ocr-eng" in hint
    assert "relocated mode (FLASH_NAMESPACES=off)" in hint


@remote(CpuLiveServerless(name="real-proj"), system_dependencies=["proj-bin"])
def proj_definition(code: str) -> dict:
    import os
    import subprocess

    done = subprocess.run(["projinfo", code, "-o", "PROJ", "-q"], capture_output=True, text=True)
    return {
        "proj": done.stdout.strip(),
        "error": done.stderr,
        "db": os.path.isfile("/usr/share/proj/proj.db"),
    }


@pytest.mark.usefixtures("flash_home")
def test_proj_reads_its_database_at_its_compiled_in_path() -> None:
    assert not Path("/usr/share/proj/proj.db").exists()  # the host has no PROJ
    out = run(proj_definition("EPSG:4326"))
    assert out["db"] is True, out
    assert "+proj=longlat +datum=WGS84" in out["proj"], out
    assert not Path("/usr/share/proj/proj.db").exists()
