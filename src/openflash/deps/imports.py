"""Which distribution to install for a module that failed to import, and which modules a
resolved set provides (what ``flash check``'s undeclared imports are measured against)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from packaging.utils import canonicalize_name

__all__ = ["distribution_for_module", "modules_provided", "record_modules"]

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
    "pkg_resources": "setuptools",
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


def modules_provided(packages: Iterable[str], site_packages: Path | None = None) -> frozenset[str]:
    """The top-level modules a set of distributions (``packages``: their names) provides.

    Read from the installed set where there is one (``site_packages``: each ``*.dist-info``'s
    RECORD, as installed by uv), else derived from the names: a distribution provides the
    module of its own name (``python-dateutil`` -> ``python_dateutil``), its first part (a
    namespace: ``google-cloud-storage`` -> ``google``) and those the map above gives it
    (``dateutil``)."""
    found: set[str] = set()
    if site_packages is not None and site_packages.is_dir():
        for record in site_packages.glob("*.dist-info/RECORD"):
            found |= record_modules(record)
    names = {canonicalize_name(p) for p in packages}
    found |= {n.replace("-", "_") for n in names}
    found |= {n.split("-")[0] for n in names}  # namespaces: google-cloud-storage -> google
    for module, distribution in IMPORT_TO_DISTRIBUTION.items():
        if canonicalize_name(distribution) in names:
            found.add(module.split(".")[0])
    return frozenset(found)


def record_modules(record: Path) -> set[str]:
    """The top-level modules a wheel's RECORD lists (``pkg/__init__.py``, ``mod.py``,
    ``ext.cpython-311-x86_64-linux-gnu.so``)."""
    found: set[str] = set()
    try:
        rows = list(csv.reader(record.read_text().splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error):
        return found
    for row in rows:
        if not row or row[0].startswith(("..", "/")):
            continue
        top = row[0].split("/", 1)[0]
        if top.startswith("__"):
            continue  # __pycache__
        if "/" in row[0] and not top.endswith((".dist-info", ".data")):
            found.add(top)
        elif top.endswith((".py", ".so", ".pyd")):
            found.add(top.split(".", 1)[0])
    return found
