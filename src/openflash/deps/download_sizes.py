"""How much a set of locked packages downloads: what ``flash check`` reports of a torch build.

uv says it: ``uv pip compile --format pylock.toml`` (PEP 751) lists each pinned release's files
with their URL and, where the index gives it (PyPI's JSON API, PEP 700), their ``size``. The
file counted is the wheel this interpreter would install (the first of its tags, packaging's
``sys_tags``, that a wheel has), else the sdist. An index that serves only HTML pages (the
PyTorch index) gives no size: the file's ``Content-Length`` is asked with one HEAD request.
``parse_sizes`` is the pure part, over uv's output.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from urllib.parse import unquote

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pathlib import Path

from packaging.tags import Tag, sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from openflash import _subprocess
from openflash.deps.torch_variants import TORCH_FAMILY, locked_variant
from openflash.envs.uv import uv_argv, uv_environ
from openflash.envs.uv_options import NO_OPTIONS, UvOptions

__all__ = ["download_size", "human_size", "parse_sizes", "torch_build"]

#: A HEAD request's time limit, in seconds.
HEAD_TIMEOUT_S = 10.0


def torch_build(
    lock_text: str, *, uv_cache: Path, options: UvOptions = NO_OPTIONS
) -> tuple[str | None, int | None]:
    """The torch build a lock holds (``cpu``, ``cu121``, ``default``; None without torch) and
    what it downloads here: the torch family and CUDA's ``nvidia-*`` packages, in bytes (None
    when unknown). ``options`` are the set's routed install options."""
    variant = locked_variant(lock_text)
    if variant is None:
        return None, None
    pins = [line for line in lock_text.splitlines() if _torch_part(line)]
    return variant, download_size(pins, uv_cache=uv_cache, options=options)


def _torch_part(line: str) -> bool:
    name = canonicalize_name(line.split("==")[0].split(" @ ")[0].strip())
    return name in TORCH_FAMILY or name.startswith("nvidia-")


def download_size(
    pins: Iterable[str], *, uv_cache: Path, options: UvOptions = NO_OPTIONS
) -> int | None:
    """The bytes the pinned requirement lines ``pins`` (``torch==2.1.0+cpu``) download here,
    with ``options`` (where they come from); None when uv cannot say, or a file's size is
    unknown."""
    wanted = [p for p in pins if p.strip() and " @ " not in p]
    if not wanted:
        return 0
    with options.arguments() as flags:
        argv = uv_argv(
            "pip",
            "compile",
            "-",
            "--no-deps",
            "--format",
            "pylock.toml",
            "--python",
            sys.executable,
            "--no-header",
            "--quiet",
            *flags,
            cache_dir=uv_cache,
        )
        done = _subprocess.run(
            argv,
            input="".join(f"{p}\n" for p in wanted),
            env={**uv_environ(), **options.environ()},
            timeout=300,
            check=False,
        )
    if not done.ok:
        return None
    sizes = parse_sizes(done.stdout, list(sys_tags()), head=_content_length)
    if any(size is None for size in sizes.values()):
        return None
    return sum(size or 0 for size in sizes.values())


def parse_sizes(
    pylock: str, tags: list[Tag], *, head: Callable[[str], int | None]
) -> dict[str, int | None]:
    """Package (canonical name) to the size of the file it installs, from uv's pylock.toml
    text: the wheel of the best of ``tags`` (else the sdist), its ``size`` or ``head(url)``."""
    rank = {tag: i for i, tag in enumerate(tags)}
    found: dict[str, int | None] = {}
    for package in tomllib.loads(pylock).get("packages", []):
        best: tuple[int, dict[str, object]] | None = None
        for wheel in package.get("wheels", []):
            name = str(wheel.get("name") or str(wheel.get("url", "")).rsplit("/", 1)[-1])
            try:  # a URL's name is percent-encoded (torch-2.1.0%2Bcpu-...)
                wheel_tags = parse_wheel_filename(unquote(name.split("#")[0]))[3]
            except InvalidWheelFilename:
                continue
            score = min((rank[t] for t in wheel_tags if t in rank), default=None)
            if score is not None and (best is None or score < best[0]):
                best = (score, wheel)
        chosen = best[1] if best else package.get("sdist")
        size: int | None = None
        if isinstance(chosen, dict):
            given = chosen.get("size")
            url = chosen.get("url")
            if isinstance(given, int):
                size = given
            elif isinstance(url, str):
                size = head(url)
        found[canonicalize_name(str(package.get("name", "")))] = size
    return found


def human_size(size: int) -> str:
    """``size`` bytes for people: ``4.2 GB``, ``812 MB``, ``64 kB`` (SI units, as uv's)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "kB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover


def _content_length(url: str) -> int | None:
    """A file's ``Content-Length``, asked with a HEAD request (None when not answered); a
    ``file://`` URL's size on disk."""
    if url.startswith("file://"):
        try:
            return Path(urllib.request.url2pathname(url[len("file://") :])).stat().st_size
        except OSError:
            return None
    if not url.startswith(("http://", "https://")):
        return None
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=HEAD_TIMEOUT_S) as reply:
            length = reply.headers.get("Content-Length")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return int(length) if length and length.isdigit() else None
