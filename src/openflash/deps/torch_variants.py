"""PyTorch's builds: a ``+cpu``/``+cuXYZ`` pin of the torch family routes it to the PyTorch index.

``torch==2.4.1+cpu`` or ``torchvision==0.16.0+cu121`` are versions only the PyTorch index has
(``<base>/cpu``, ``<base>/cu121``: PEP 503 simple pages per variant). ``route_torch`` turns such
a pin, or an explicit ``torch_backend="cu121"``, into install options: with the real index
(FLASH_TORCH_INDEX_URL unset) uv's own ``--torch-backend``, which sends only the torch family
there; with another base (a mirror, or the loopback stand-in of the tests) that variant's page
as an extra index, which uv asks first (its ``first-index`` strategy), so the torch family comes
from it and every package it does not serve from PyPI.

``torch_backend="auto"`` with the real index is uv's ``--torch-backend auto`` (the build the
machine's driver supports, the CPU build without one).
"""

from __future__ import annotations

import re
from dataclasses import replace

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from openflash.envs.uv_options import UvOptions
from openflash.errors import DependencyError

__all__ = ["DEFAULT_TORCH_INDEX", "TORCH_FAMILY", "pinned_variant", "route_torch"]

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
            return replace(options, torch_backend=None)  # uv's auto knows the real index only
        return options
    if base == DEFAULT_TORCH_INDEX:
        return replace(options, torch_backend=chosen)
    index = f"{base}/{chosen}"
    extra = (index, *(u for u in options.extra_index_urls if u != index))
    return replace(options, torch_backend=None, extra_index_urls=extra)
