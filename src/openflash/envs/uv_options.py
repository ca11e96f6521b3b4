"""An endpoint's install options, as uv takes them: where packages come from and how they build.

``UvOptions`` holds the openflash extensions of ``remote(...)``/``Endpoint(...)`` (and of
``[tool.openflash]`` in pyproject.toml, deps/project_defaults.py): ``index_url`` (uv's
``--index-url``, PEP 503 simple API), ``extra_index_urls`` (``--extra-index-url``), ``find_links``
(``--find-links``: a folder or a page of links), ``torch_backend`` (``--torch-backend``: ``auto``,
``cpu``, ``cu121``, ...), ``extra_build_dependencies`` (uv's ``extra-build-dependencies``
setting: packages installed in a package's build environment, such as torch for flash-attn),
``no_build_isolation`` (``--no-build-isolation`` for every package, or
``--no-build-isolation-package`` for those named) and ``prerelease`` (``--prerelease``).

Index URLs may hold credentials (``https://user:token@host/simple``): they reach uv through its
environment variables (``UV_INDEX_URL``, ``UV_EXTRA_INDEX_URL``, ``UV_FIND_LINKS``), never an
argv, and every text meant for people shows them redacted (``repr``, ``describe``). ``digest``
keys resolutions and environments: different options, different environments.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from openflash.errors import ConfigError

__all__ = ["NO_OPTIONS", "OPTION_NAMES", "PRERELEASE", "UvOptions", "redact_url", "uv_options"]

#: uv's ``--prerelease`` strategies.
PRERELEASE = ("disallow", "allow", "if-necessary", "explicit", "if-necessary-or-explicit")
OPTION_NAMES = (
    "index_url",
    "extra_index_urls",
    "find_links",
    "torch_backend",
    "extra_build_dependencies",
    "no_build_isolation",
    "prerelease",
)
_TORCH_BACKEND = re.compile(r"^(auto|cpu|cu\d{2,3}|rocm\d+(\.\d+)*|xpu)$")


def redact_url(url: str) -> str:
    """``url`` with any user and password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


@dataclass(frozen=True, slots=True)
class UvOptions:
    """Validated install options (``uv_options`` builds them); empty means uv's defaults."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    torch_backend: str | None = None
    extra_build_dependencies: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: ``(":all:",)`` for every package, else the packages built without isolation.
    no_build_isolation: tuple[str, ...] = ()
    prerelease: str | None = None
    #: Constraints (PEP 508 lines, uv's ``--constraint``): a requirements file's ``-c`` files.
    constraints: tuple[str, ...] = ()
    #: ``torch_backend`` was openflash's default (deps/torch_variants.py), not written by the
    #: user: if the PyTorch index cannot be reached, torch comes from the other indexes.
    torch_default: bool = False

    def __bool__(self) -> bool:
        return self != UvOptions()

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"UvOptions({shown})"

    def describe(self) -> dict[str, object]:
        """The options that are set, index URLs redacted: for dashboards, logs and errors."""
        shown: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not value or f.name == "torch_default":
                continue
            if f.name in ("index_url", "extra_index_urls", "find_links"):
                value = (
                    redact_url(value) if isinstance(value, str) else [redact_url(u) for u in value]
                )
            elif f.name == "extra_build_dependencies":
                value = {name: list(reqs) for name, reqs in value}
            elif isinstance(value, tuple):
                value = list(value)
            shown[f.name] = value
        return shown

    def digest(self) -> str:
        """A hash of every option (credentials included, as a hash only): part of the keys."""
        if not self:
            return ""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]

    def over(self, defaults: UvOptions) -> UvOptions:
        """These options, with ``defaults`` (the project's) for those not set here."""
        changes = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}
        return replace(defaults, **changes)

    def environ(self) -> dict[str, str]:
        """uv's variables for the index options that are set (they override the caller's)."""
        env = {}
        if self.index_url:
            env["UV_INDEX_URL"] = self.index_url
        if self.extra_index_urls:
            env["UV_EXTRA_INDEX_URL"] = " ".join(self.extra_index_urls)
        if self.find_links:
            env["UV_FIND_LINKS"] = ",".join(self.find_links)
        return env

    @contextlib.contextmanager
    def arguments(self) -> Iterator[list[str]]:
        """uv's flags for the other options; a ``--config-file`` holding
        ``extra-build-dependencies`` (the setting has no flag) and a ``--constraint`` file,
        while the context lasts."""
        args: list[str] = []
        if self.torch_backend:
            args += ["--torch-backend", self.torch_backend]
        if self.prerelease:
            args += ["--prerelease", self.prerelease]
        if self.no_build_isolation == (":all:",):
            args.append("--no-build-isolation")
        else:
            for name in self.no_build_isolation:
                args += ["--no-build-isolation-package", name]
        if not self.extra_build_dependencies and not self.constraints:
            yield args
            return
        with tempfile.TemporaryDirectory(prefix="openflash-uv-") as tmp:
            if self.constraints:
                constraints = Path(tmp) / "constraints.txt"
                constraints.write_text("".join(f"{c}\n" for c in self.constraints))
                args += ["--constraint", str(constraints)]
            if self.extra_build_dependencies:
                table = ", ".join(
                    f"{json.dumps(name)} = {json.dumps(list(reqs))}"
                    for name, reqs in self.extra_build_dependencies
                )
                config = Path(tmp) / "uv.toml"
                config.write_text(f"extra-build-dependencies = {{ {table} }}\n")
                args += ["--config-file", str(config)]
            yield args


#: No options: uv's defaults.
NO_OPTIONS = UvOptions()


def uv_options(
    *,
    index_url: str | None = None,
    extra_index_urls: Iterable[str] | str | None = None,
    find_links: Iterable[str] | str | None = None,
    torch_backend: str | None = None,
    extra_build_dependencies: Mapping[str, Iterable[str]] | None = None,
    no_build_isolation: bool | Iterable[str] | None = None,
    prerelease: str | None = None,
    base_dir: Path | None = None,
    where: str = "remote()",
) -> UvOptions:
    """Validate the options as written by a user; ``find_links`` folders are relative to
    ``base_dir`` (the decorated file's folder). Raises ConfigError naming the value and what
    ``where`` (the call or file) accepts."""
    extra = _strings(extra_index_urls, "extra_index_urls", where)
    links = tuple(_link(v, base_dir, where) for v in _strings(find_links, "find_links", where))
    return UvOptions(
        index_url=_url(index_url, "index_url", where) if index_url is not None else None,
        extra_index_urls=tuple(_url(u, "extra_index_urls", where) for u in extra),
        find_links=links,
        torch_backend=_torch_backend(torch_backend, where),
        extra_build_dependencies=_build_dependencies(extra_build_dependencies, where),
        no_build_isolation=_no_isolation(no_build_isolation, where),
        prerelease=_prerelease(prerelease, where),
    )


def _strings(value: Iterable[str] | str | None, name: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(
                f"{where}: {name} must hold non-empty strings, got {item!r}",
                hint=f'write {name}=["https://pkgs.example.com/simple"]',
            )
    return tuple(item.strip() for item in items)


def _url(value: object, name: str, where: str) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if (
        parts is None
        or parts.scheme not in ("http", "https", "file")
        or not (parts.hostname or parts.scheme == "file")
    ):
        shown = redact_url(value) if isinstance(value, str) else value
        raise ConfigError(
            f"{where}: {name} must be an http(s) or file URL of a package index, got {shown!r}",
            hint=f'write {name}="https://pkgs.example.com/simple" (PEP 503 simple API)',
        )
    return value.strip() if isinstance(value, str) else ""


def _link(value: str, base_dir: Path | None, where: str) -> str:
    if urlsplit(value).scheme in ("http", "https", "file"):
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_dir():
        raise ConfigError(
            f"{where}: find_links folder {str(path)!r} does not exist",
            hint="name a folder of wheels (relative to the decorated file) or an http(s) URL "
            "of a page that links them",
        )
    return str(path.resolve())


def _torch_backend(value: str | None, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _TORCH_BACKEND.match(value.strip().lower()):
        raise ConfigError(
            f"{where}: torch_backend {value!r} is not one uv knows",
            hint='use "auto", "cpu", or a CUDA build such as "cu121" or "cu126" '
            "(uv's --torch-backend)",
        )
    return value.strip().lower()


def _build_dependencies(
    value: Mapping[str, Iterable[str]] | None, where: str
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: extra_build_dependencies must map a package to what its build needs, "
            f"got {value!r}",
            hint='write extra_build_dependencies={"flash-attn": ["torch"]}',
        )
    pairs = []
    for name, reqs in value.items():
        wanted = [reqs] if isinstance(reqs, str) else list(reqs)
        for req in wanted:
            try:
                Requirement(req)
            except (InvalidRequirement, TypeError):
                raise ConfigError(
                    f"{where}: extra_build_dependencies[{name!r}] holds {req!r}, which is not a "
                    "PEP 508 requirement",
                    hint='write extra_build_dependencies={"flash-attn": ["torch==2.4.1"]}',
                ) from None
        pairs.append((canonicalize_name(name), tuple(wanted)))
    return tuple(sorted(pairs))


def _no_isolation(value: bool | Iterable[str] | None, where: str) -> tuple[str, ...]:
    if value is None or value is False:
        return ()
    if value is True:
        return (":all:",)
    names = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(
            f"{where}: no_build_isolation must be True or package names, got {value!r}",
            hint='write no_build_isolation=True, or no_build_isolation=["flash-attn"]',
        )
    return tuple(sorted(canonicalize_name(n) for n in names))


def _prerelease(value: str | bool | None, where: str) -> str | None:
    if value is None or value is False:
        return None
    if value is True:
        return "allow"
    if value not in PRERELEASE:
        raise ConfigError(
            f"{where}: prerelease {value!r} is not one of uv's strategies",
            hint="use one of " + ", ".join(repr(p) for p in PRERELEASE) + " (or True for 'allow')",
        )
    return value
