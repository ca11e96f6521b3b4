"""PyTorch's builds: a ``+cpu``/``+cuXYZ`` pin of the torch family routes it to the PyTorch index.

``torch==2.4.1+cpu`` or ``torchvision==0.16.0+cu121`` are versions only the PyTorch index has
(``<base>/cpu``, ``<base>/cu121``: PEP 503 simple pages per variant). ``route_torch`` turns such
a pin, or an explicit ``torch_backend="cu121"``, into install options: with the real index
(FLASH_TORCH_INDEX_URL unset) uv's own ``--torch-backend``, which sends only the torch family
there; with another base (a mirror, or the loopback stand-in of the tests) that variant's page
as an extra index, which uv asks first (its ``first-index`` strategy), so the torch family comes
from it and every package it does not serve from PyPI.

``torch_backend="auto"`` is the default for an endpoint that imports torch (torchvision,
torchaudio) or declares one of the torch family (``default_backend``): a CPU endpoint, or any
endpoint on a machine without an NVIDIA driver, gets the CPU build (``cpu``); a GPU endpoint on a
machine with one gets the CUDA build its driver supports. The driver's version is read as uv
reads it (``UV_CUDA_DRIVER_VERSION``, else ``nvidia-smi --query-gpu=driver_version``). With the
real index that is uv's own ``--torch-backend auto``; with another base, the variants that
driver supports, newest first, then ``cpu``, as extra indexes (uv's ``LINUX_CUDA_DRIVERS`` table,
after NVIDIA's CUDA toolkit release notes): uv takes each package from the first that has it.
A setting the user wrote (``torch_backend="cu121"``, a ``+cpu`` pin) always wins.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from openflash import _subprocess
from openflash.envs.uv_options import UvOptions
from openflash.errors import DependencyError

__all__ = [
    "DEFAULT_TORCH_INDEX",
    "TORCH_FAMILY",
    "cuda_driver",
    "cuda_variants",
    "default_backend",
    "locked_variant",
    "pinned_variant",
    "route_torch",
    "with_torch_fallback",
]

logger = logging.getLogger("openflash")
T = TypeVar("T")

DEFAULT_TORCH_INDEX = "https://download.pytorch.org/whl"
#: The packages the PyTorch index builds per variant (uv's --torch-backend routes these).
TORCH_FAMILY = frozenset(
    {
        "torch",
        "torchvision",
        "torchaudio",
        "torchtext",
        "torchdata",
        "torchrec",
        "torchao",
        "torchcsprng",
        "triton",
        "pytorch-triton",
        "pytorch-triton-rocm",
        "pytorch-triton-xpu",
        "fbgemm-gpu",
    }
)
_VARIANT = re.compile(r"^(cpu|cu\d{2,3}|rocm\d+(\.\d+)*|xpu)$")
#: The modules whose import makes ``torch_backend="auto"`` an endpoint's default.
TORCH_IMPORTS = frozenset({"torch", "torchvision", "torchaudio"})
#: Linux CUDA builds and the oldest driver each runs on, newest first (uv's LINUX_CUDA_DRIVERS,
#: from NVIDIA's CUDA toolkit release notes, tables 2 and 3).
_CUDA_DRIVERS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("cu130", (580, 65, 6)),
    *((f"cu12{minor}", (525, 60, 13)) for minor in (9, 8, 6, 5, 4, 3, 2, 1, 0)),
    *((f"cu11{minor}", (450, 80, 2)) for minor in (8, 7, 6, 5, 4, 3, 2, 1)),
    ("cu110", (450, 36, 6)),
    ("cu102", (440, 33)),
    ("cu101", (418, 39)),
    ("cu100", (410, 48)),
    ("cu92", (396, 26)),
    ("cu91", (390, 46)),
    ("cu90", (384, 81)),
    ("cu80", (375, 26)),
)


def cuda_driver() -> str | None:
    """This machine's NVIDIA driver version (``550.54.15``), or None without one: as uv reads
    it, ``UV_CUDA_DRIVER_VERSION`` first, else ``nvidia-smi --query-gpu=driver_version``."""
    given = os.environ.get("UV_CUDA_DRIVER_VERSION", "").strip()
    if given:
        return given
    return _driver_from_smi(shutil.which("nvidia-smi"))


@functools.lru_cache(maxsize=8)
def _driver_from_smi(exe: str | None) -> str | None:
    if exe is None:
        return None
    argv = [exe, "--query-gpu=driver_version", "--format=csv,noheader"]
    done = _subprocess.run(argv, timeout=20, check=False)
    first = done.stdout.strip().splitlines()[:1] if done.ok else []
    version = first[0].strip() if first else ""
    return version if re.fullmatch(r"\d+(\.\d+)*", version) else None


def cuda_variants(driver: str) -> tuple[str, ...]:
    """The CUDA builds a Linux driver of version ``driver`` runs, newest first (none for a
    version that does not parse)."""
    try:
        have = tuple(int(part) for part in driver.split("."))
    except ValueError:
        return ()
    return tuple(variant for variant, oldest in _CUDA_DRIVERS if have >= oldest)


def default_backend(
    options: UvOptions, specs: tuple[str, ...], imports: Iterable[str], *, gpu: bool
) -> UvOptions:
    """``options`` with ``torch_backend="auto"`` decided for one endpoint on this machine.

    ``auto`` is the default where the endpoint's code ``imports`` torch (or torchvision,
    torchaudio) or ``specs`` name one of the torch family; it becomes ``cpu`` for a CPU endpoint
    (``gpu`` False) and on a machine without an NVIDIA driver, and stays ``auto`` for a GPU
    endpoint on a machine with one (``route_torch`` picks the driver's build). A backend the
    user set, or a ``+cpu``/``+cuXYZ`` pin, is left as it is."""
    backend = options.torch_backend
    try:
        pinned = pinned_variant(specs)
    except DependencyError:
        return options  # route_torch reports the disagreement for this set
    if backend is None:
        if pinned is not None or not _uses_torch(specs, imports):
            return options
        backend = "auto"
    if backend != "auto" or pinned is not None:
        return options
    default = options.torch_backend is None
    if not gpu or cuda_driver() is None:
        return replace(options, torch_backend="cpu", torch_default=default)
    return replace(options, torch_backend="auto", torch_default=default)


def with_torch_fallback(
    options: UvOptions, route: Callable[[UvOptions], UvOptions], attempt: Callable[[UvOptions], T]
) -> tuple[T, UvOptions]:
    """``attempt(route(options))`` and the routed options it used. When ``torch_backend`` is
    openflash's default (not written) and the PyTorch index cannot be reached (a firewall, a
    PyPI-only mirror), the same attempt again with the torch family from the other indexes
    (PyPI's default build: CUDA on Linux), announced by a warning; a backend the user wrote
    fails instead."""
    routed = route(options)
    try:
        return attempt(routed), routed
    except DependencyError as e:
        if not options.torch_default or type(e) is not DependencyError or not _unreachable(e):
            raise
    plain = route(replace(options, torch_backend=None, torch_default=False))
    text = (
        f"the PyTorch index could not be reached for the {options.torch_backend} build of "
        "torch; it comes from the package index instead (on Linux PyPI's is the CUDA build, "
        "gigabytes). Set FLASH_TORCH_INDEX_URL to a mirror of the PyTorch index, or "
        "torch_backend= to make this an error"
    )
    _subprocess.report(f"warning: {text}")
    logger.warning("openflash: %s", text)
    return attempt(plain), plain


def _unreachable(error: DependencyError) -> bool:
    return error.message.startswith("could not reach the package index")


def _uses_torch(specs: tuple[str, ...], imports: Iterable[str]) -> bool:
    if TORCH_IMPORTS & {module.split(".")[0] for module in imports}:  # dotted: torch.nn
        return True
    for spec in specs:
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            continue
        if req.url is None and canonicalize_name(req.name) in TORCH_FAMILY:
            return True
    return False


def locked_variant(lock_text: str) -> str | None:
    """The build of the torch family a lock holds: its local version (``cpu``, ``cu121``),
    ``"default"`` for a torch without one (PyPI's: CUDA on Linux), or None without torch."""
    for line in lock_text.splitlines():
        name, sep, version = line.partition("==")
        if sep and canonicalize_name(name.strip()) == "torch":
            local = version.split()[0].partition("+")[2].lower() if version.strip() else ""
            return local if _VARIANT.match(local) else "default"
    return None


def pinned_variant(specs: tuple[str, ...]) -> str | None:
    """The build the torch family's local versions pin (``cpu``, ``cu121``), or None.
    Raises DependencyError when two pins name different builds."""
    found: dict[str, str] = {}
    for spec in specs:
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) not in TORCH_FAMILY:
            continue
        for clause in req.specifier:
            local = clause.version.partition("+")[2].lower()
            if _VARIANT.match(local):
                found[spec] = local
    variants = sorted(set(found.values()))
    if len(variants) > 1:
        listed = ", ".join(repr(s) for s in found)
        raise DependencyError(
            f"these pins ask for different PyTorch builds ({', '.join(variants)}): {listed}",
            hint="pin one build for the whole torch family, e.g. torch==2.1.0+cu121 with "
            "torchvision==0.16.0+cu121",
        )
    return variants[0] if variants else None


def route_torch(specs: tuple[str, ...], options: UvOptions, base: str) -> UvOptions:
    """``options`` with the torch family routed to the PyTorch build the pins or
    ``options.torch_backend`` name (``base``: the PyTorch index's base URL)."""
    variant = pinned_variant(specs)
    backend = options.torch_backend
    if variant and backend not in (None, "auto", variant):
        raise DependencyError(
            f"torch_backend={backend!r} and the pinned build +{variant} disagree",
            hint=f'drop torch_backend, or pin the +{backend} build ("torch==X.Y.Z+{backend}")',
        )
    chosen = variant or (backend if backend != "auto" else None)
    base = base.rstrip("/")
    if chosen is None:
        if backend == "auto" and base != DEFAULT_TORCH_INDEX:
            # uv's auto knows the real index only: the same choice, as that base's pages.
            driver = cuda_driver()
            wanted = (*(cuda_variants(driver) if driver else ()), "cpu")
            return _pages(options, base, wanted)
        return options
    if base == DEFAULT_TORCH_INDEX:
        return replace(options, torch_backend=chosen)
    return _pages(options, base, (chosen,))


def _pages(options: UvOptions, base: str, variants: tuple[str, ...]) -> UvOptions:
    """``options`` asking ``base``'s pages of ``variants`` first, in that order."""
    pages = tuple(f"{base}/{v}" for v in variants)
    extra = (*pages, *(u for u in options.extra_index_urls if u not in pages))
    return replace(options, torch_backend=None, extra_index_urls=extra)
