"""Which system file a worker's error says is missing, and the hint for it in either mode."""

from __future__ import annotations

import pytest

from openflash.deps.missing_files import missing_file_hint, missing_system_file
from openflash.deps.namespace_mode import LayerMode


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (
            "TesseractError: (1, 'Error opening data file "
            "/usr/share/tesseract-ocr/5/tessdata/eng.traineddata Please make sure ...')",
            "/usr/share/tesseract-ocr/5/tessdata/eng.traineddata",
        ),
        (
            "FileNotFoundError: [Errno 2] No such file or directory: '/etc/ImageMagick-6/policy.xml'",
            "/etc/ImageMagick-6/policy.xml",
        ),
        ("ValueError: bad value 3", None),
        ("FileNotFoundError: [Errno 2] No such file or directory: 'data.csv'", None),
    ],
)
def test_the_missing_system_path_is_found_in_the_message(message: str, path: str | None) -> None:
    assert missing_system_file(message) == path


def test_the_hint_names_the_mode_the_endpoint_and_its_packages() -> None:
    relocated = LayerMode("relocated", "FLASH_NAMESPACES=off")
    hint = missing_file_hint("/usr/share/x/y", relocated, "ocr", ["tesseract-ocr"])
    assert hint.startswith("/usr/share/x/y is a system file: the Debian package that ships it")
    assert "endpoint 'ocr' (declared: tesseract-ocr)" in hint
    assert "relocated mode (FLASH_NAMESPACES=off)" in hint and "built-in data paths" in hint
    real = missing_file_hint("/usr/share/x/y", LayerMode("namespace", "ok"), "ocr", [])
    assert "(declared: none)" in real and "at their real paths" in real
