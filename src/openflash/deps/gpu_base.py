"""The GPU base set: the packages Runpod's GPU worker image ships, for GPU endpoints whose code
imports them without declaring them.

Runpod runs GPU endpoints on its ``runpod/flash:py3.12-latest`` image (built on
``runpod/pytorch``), which has torch, torchvision, torchaudio, numpy and triton installed, and
programs written for it import torch without listing it. openflash adds one of these to a GPU
endpoint's set only when the endpoint's code imports it and its ``dependencies`` do not name it:
a declared version always wins, CPU endpoints never get them, and what is not imported is not
installed. The image's tag is ``latest``, so the set is unpinned: the newest versions that fit
the declared ones. FLASH_GPU_BASE_PACKAGES replaces the set (comma-separated requirements; empty:
none), for tests with a small stand-in or to pin the image's versions.

A member taken from the set that uses another one at run time without the code importing it
brings that one too (``COMPANIONS``): torch converts to and from numpy arrays (``tensor.numpy()``,
``torch.from_numpy``) with the image's numpy, so code that imports only torch finds numpy there,
as it does on Runpod, instead of torch's "Failed to initialize NumPy" warning and a failing call.
"""

from __future__ import annotations

from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from openflash.deps.imports import distribution_for_module
from openflash.errors import ConfigError

__all__ = ["COMPANIONS", "GPU_BASE_IMAGE", "GPU_BASE_PACKAGES", "base_set", "from_base"]

#: The image whose packages the set follows (Runpod's GPU worker image and its tag).
GPU_BASE_IMAGE = "runpod/flash:py3.12-latest"
#: What that image has installed for Python, by distribution name.
GPU_BASE_PACKAGES = ("torch", "torchvision", "torchaudio", "numpy", "triton")
#: Members that use another member at run time (an optional dependency the image has installed),
#: by canonical name: taking one from the set takes these too.
COMPANIONS: dict[str, tuple[str, ...]] = {
    "torch": ("numpy",),
    "torchvision": ("numpy",),
    "torchaudio": ("numpy",),
}


def base_set(text: str | None) -> tuple[str, ...]:
    """The base set: FLASH_GPU_BASE_PACKAGES's requirements if set (``""``: none), else the
    image's packages. Raises ConfigError naming a requirement that does not parse."""
    if text is None:
        return GPU_BASE_PACKAGES
    specs = tuple(part.strip() for part in text.split(",") if part.strip())
    for spec in specs:
        try:
            Requirement(spec)
        except InvalidRequirement as e:
            raise ConfigError(
                f"FLASH_GPU_BASE_PACKAGES: {spec!r} is not a requirement ({e})",
                hint="list requirements separated by commas, e.g. "
                "FLASH_GPU_BASE_PACKAGES='torch==2.5.1,numpy'",
            ) from e
    return specs


def from_base(
    declared: Iterable[str], imports: Iterable[str], base: Iterable[str]
) -> tuple[str, ...]:
    """The requirements of ``base`` whose distribution ``imports`` (module names) use and
    ``declared`` (PEP 508 requirements) does not name, plus what a member taken so uses at run
    time (``COMPANIONS``, unless declared too), in ``base``'s order. A declared torch is the
    endpoint's own set, which brings nothing from the base set."""
    named = {_name(spec) for spec in declared}
    in_base = {_name(spec) for spec in base}
    used: set[str] = {canonicalize_name(distribution_for_module(module)) for module in imports}
    taken = (used & in_base) - named
    used |= {companion for name in taken for companion in COMPANIONS.get(name, ())}
    return tuple(spec for spec in base if _name(spec) in used and _name(spec) not in named)


def _name(spec: str) -> str:
    try:
        return canonicalize_name(Requirement(spec).name)
    except InvalidRequirement:  # a local path: never one of the image's packages
        return ""
