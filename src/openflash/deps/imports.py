"""Which distribution to install for a module that failed to import."""

from __future__ import annotations

__all__ = ["distribution_for_module"]

#: Import names whose distribution is called something else.
IMPORT_TO_DISTRIBUTION = {
    "attr": "attrs",
    "bs4": "beautifulsoup4",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "docx": "python-docx",
    "dotenv": "python-dotenv",
    "fitz": "pymupdf",
    "google.protobuf": "protobuf",
    "jose": "python-jose",
    "jwt": "PyJWT",
    "magic": "python-magic",
    "OpenSSL": "pyOpenSSL",
    "PIL": "Pillow",
    "pptx": "python-pptx",
    "serial": "pyserial",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "PyYAML",
    "Crypto": "pycryptodome",
    "git": "GitPython",
    "usb": "pyusb",
    "zmq": "pyzmq",
}


def distribution_for_module(module: str) -> str:
    """The distribution that provides ``module`` (``cv2`` -> ``opencv-python``)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = IMPORT_TO_DISTRIBUTION.get(".".join(parts[:end]))
        if found:
            return found
    return parts[0]
