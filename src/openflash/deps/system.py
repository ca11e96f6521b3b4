"""System dependencies as layers: an apt closure, downloaded and extracted, never installed.

The closure is what apt would add to the worker's base system (the host's dpkg status for the
local backend), so a layer holds only what the base lacks. Each .deb is extracted once with
``dpkg-deb -x`` into the unpacked-deb store (``deps.deb_store``), and the layer is assembled in
``FLASH_HOME/layers/<key>/`` by hard links from there, published like environments, and it is
made to work without the maintainer scripts a real install would run:

- every folder with shared objects goes on LD_LIBRARY_PATH (ffmpeg needs pulseaudio/, blas/...);
- ``update-alternatives --install`` lines of postinst scripts become symlinks in the layer
  (libblas.so.3, liblapack.so.3, ...);
- absolute symlinks into the layer are made relative, so the layer does not point at the host;
- where the host has merged /usr, the layer's ``lib/``, ``bin/``... move into ``usr/``;
- with namespaces (``deps.namespace_mode``), ``etc/ld.so.cache`` covers host and layer;
- the generic triggers (glib schemas, MIME database, gdk-pixbuf loaders, fontconfig cache) run
  for the layer (``deps.triggers``);
- tesseract gets TESSDATA_PREFIX (for the relocated mode); graphviz gets its plugin config
  (``dot -c``) and GVBINDIR; fontconfig a config that adds the
  layer's fonts; git its exec path; XDG_DATA_DIRS the layer's share/.

The key is a hash of the requested names, the closure's exact versions and the distribution.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from openflash import _subprocess
from openflash.deps.apt import Apt, DebPackage
from openflash.deps.deb_store import assemble, unpack_all
from openflash.deps.triggers import run_triggers
from openflash.envs.store import Store, content_key, write_atomic
from openflash.errors import StorePermissionError, SystemDependencyError

__all__ = [
    "LAYER_FORMAT",
    "SystemLayer",
    "build_layer",
    "load_layer",
    "resolve_system",
    "system_layer",
]

#: Bumped whenever the layout or the fixups of a layer change.
LAYER_FORMAT = 3
LAYER_INFO = "openflash-layer.json"
MULTIARCH = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
_BIN_DIRS = ("usr/local/bin", "usr/bin", "bin", "usr/local/sbin", "usr/sbin", "sbin")
_LIB_FIRST = (f"usr/lib/{MULTIARCH}", f"lib/{MULTIARCH}", "usr/lib", "lib")
_SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
_ALTERNATIVE = re.compile(
    r"update-alternatives\s+(?:--\S+\s+)*--install\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)"
)


@dataclass(frozen=True)
class SystemLock:
    """The resolved closure of a set of system dependencies."""

    names: tuple[str, ...]
    packages: tuple[DebPackage, ...]
    release: str
    resolved_at: float

    @property
    def key(self) -> str:
        if not self.packages:
            return ""
        pins = [(p.name, p.version, p.arch) for p in self.packages]
        return content_key("layer", self.names, sorted(pins), self.release, LAYER_FORMAT)


@dataclass(frozen=True)
class SystemLayer:
    """A built layer and what a worker's environment needs to use it."""

    key: str = ""
    path: Path | None = None
    #: Variables to set, e.g. GVBINDIR.
    env: dict[str, str] = field(default_factory=dict)
    #: Path-like variables to prefix, e.g. PATH and LD_LIBRARY_PATH.
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)


def distribution_release(os_release: Path = Path("/etc/os-release")) -> str:
    """``debian-12`` style identity of the base distribution."""
    try:
        text = os_release.read_text()
    except OSError:
        return "unknown"
    fields = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    ident = fields.get("ID", "unknown").strip('"')
    version = fields.get("VERSION_ID", fields.get("VERSION_CODENAME", "")).strip('"')
    return f"{ident}-{version}"


def system_layer(
    names: tuple[str, ...], *, store: Store, apt: Apt, ttl: float, real_paths: bool = False
) -> SystemLayer:
    """The layer for ``names``: resolved (or from the cache), then built once.

    A cached resolution may name versions the archive no longer has (a security update replaced
    them): then the set is resolved again and the build tried once more.
    """
    lock = resolve_system(names, store=store, apt=apt, ttl=ttl)
    try:
        return build_layer(store, lock, apt, real_paths=real_paths)
    except SystemDependencyError:
        fresh = resolve_system(names, store=store, apt=apt, ttl=0, refresh_index=True)
        if fresh.packages == lock.packages:
            raise
        return build_layer(store, fresh, apt, real_paths=real_paths)


def resolve_system(
    names: tuple[str, ...], *, store: Store, apt: Apt, ttl: float, refresh_index: bool = False
) -> SystemLock:
    """The closure of ``names`` relative to the base system, cached for ``ttl`` seconds."""
    release = distribution_release()
    if not names:
        return SystemLock(names, (), release, time.time())
    key = content_key("system", names, release, apt.base_fingerprint(), LAYER_FORMAT)
    cache_file = store.resolutions / f"system-{key}.json"
    now = time.time()
    try:
        data = json.loads(store.read_text(cache_file))
        if now - data["resolved_at"] < ttl:
            packages = tuple(DebPackage(*p) for p in data["packages"])
            return SystemLock(names, packages, release, data["resolved_at"])
    except StorePermissionError:
        raise  # a planted closure would name the .debs that run
    except (OSError, ValueError, KeyError, TypeError):
        pass
    with apt.locked():
        if refresh_index:
            apt.ensure_index(max_age=0)
        packages = tuple(apt.simulate(names))
    lock = SystemLock(names, packages, release, now)
    payload = {
        "names": list(names),
        "packages": [[p.name, p.version, p.arch] for p in packages],
        "release": release,
        "resolved_at": now,
    }
    write_atomic(cache_file, json.dumps(payload, indent=1))
    return lock


def build_layer(
    store: Store, lock: SystemLock, apt: Apt, *, real_paths: bool = False
) -> SystemLayer:
    """The layer for ``lock``, downloaded and extracted once per key.

    With ``real_paths`` (namespaces work here: ``deps.namespace_mode``), the layer also gets the
    ``/etc/ld.so.cache`` a real install would have (host and layer libraries, written by
    ``ldconfig`` run in a namespace with the layer overlaid), so that ``ctypes.util.find_library``
    and ``dlopen`` by soname find its libraries.
    """
    if not lock.packages:
        return SystemLayer()
    key = lock.key
    final = store.path("layers", key)

    def build(tmp: Path) -> dict[str, object]:
        with apt.locked():
            verified = apt.download_verified(lock.packages)
        debs = [deb.path for deb in verified]
        _subprocess.report(f"unpacking {len(debs)} packages for layer {key}")
        unpacked = unpack_all(store, debs, [deb.sha256 for deb in verified])
        assemble(unpacked, tmp)
        scripts = [u.postinst for u in unpacked]
        _merge_usr(tmp)
        env, paths = _fix_up(tmp, final, scripts)
        if real_paths:
            _ld_cache(tmp)
        lib_dirs = paths.get("LD_LIBRARY_PATH", [])
        env.update(
            run_triggers(tmp, final, real_paths=real_paths, lib_dirs=lib_dirs, multiarch=MULTIARCH)
        )
        shutil.rmtree(tmp / "openflash" / "triggers", ignore_errors=True)
        info = {"env": env, "paths": paths}
        write_atomic(tmp / LAYER_INFO, json.dumps(info, indent=1))
        return {"packages": [f"{p.name}={p.version}" for p in lock.packages]}

    return load_layer(store.build_once("layers", key, build), key, store)


def load_layer(path: Path, key: str, store: Store) -> SystemLayer:
    """A built layer's description, with its paths made absolute."""
    info = json.loads(store.read_text(path / LAYER_INFO))
    env = {name: value.replace("{layer}", str(path)) for name, value in info["env"].items()}
    paths = {name: tuple(str(path / rel) for rel in rels) for name, rels in info["paths"].items()}
    return SystemLayer(key, path, env, paths)


def _merge_usr(root: Path, host: Path = Path("/")) -> None:
    """Move ``lib/``, ``bin/``, ... into ``usr/`` where the host has merged /usr (``/lib`` a link
    to ``usr/lib``), leaving a relative link, so the layer has one tree per real folder."""
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top, merged = root / name, root / "usr" / name
        if not (host / name).is_symlink() or top.is_symlink() or not top.is_dir():
            continue
        for dirpath, _dirnames, filenames in os.walk(top):
            for entry in filenames + [d for d in _dirnames if (Path(dirpath) / d).is_symlink()]:
                source = Path(dirpath) / entry
                dest = merged / source.relative_to(top)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not (dest.exists() or dest.is_symlink()):
                    source.rename(dest)
        shutil.rmtree(top)
        top.symlink_to(f"usr/{name}")


def _ld_cache(root: Path) -> None:
    """Write ``etc/ld.so.cache`` for the host with the layer overlaid (``ldconfig`` inside the
    layer's namespace, its output kept out of the mounted tree until it is done)."""
    from openflash.deps.namespace_mode import run_in_layer

    scratch = root / "openflash"
    scratch.mkdir(exist_ok=True)
    run_in_layer(
        root,
        [_ldconfig(), "-X", "-C", str(scratch / "ld.so.cache")],
        timeout=300,
        error=SystemDependencyError,
    )
    (root / "etc").mkdir(exist_ok=True)
    (scratch / "ld.so.cache").rename(root / "etc" / "ld.so.cache")


def _ldconfig() -> str:
    """ldconfig: on PATH, else in the sbin folders a user's PATH lacks where it is not root."""
    sbin = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which("ldconfig") or shutil.which("ldconfig", path=sbin) or "ldconfig"


def _fix_up(
    root: Path, final: Path, scripts: list[str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Do what maintainer scripts would have done; the variables a worker needs: those to set,
    and the path-like ones to prefix (with folders relative to the layer)."""
    _install_alternatives(root, scripts)
    _relative_symlinks(root)
    lib_dirs = _library_dirs(root)
    paths: dict[str, list[str]] = {
        "PATH": [d for d in _BIN_DIRS if (root / d).is_dir()],
        "LD_LIBRARY_PATH": lib_dirs,
    }
    env: dict[str, str] = {}
    if (root / "usr/share").is_dir():
        paths["XDG_DATA_DIRS"] = ["usr/share"]
    graphviz = root / "usr/lib" / MULTIARCH / "graphviz"
    if graphviz.is_dir():
        _graphviz_config(root, graphviz, lib_dirs)
        env["GVBINDIR"] = "{layer}/" + str(graphviz.relative_to(root))
    if (root / "usr/share/fonts").is_dir() or (root / "etc/fonts").is_dir():
        _fontconfig(root, final)
        env["FONTCONFIG_FILE"] = "{layer}/openflash/fonts.conf"
    tessdata = sorted(root.glob("usr/share/tesseract-ocr/*/tessdata"))
    if tessdata:
        env["TESSDATA_PREFIX"] = "{layer}/" + str(tessdata[-1].relative_to(root))
    if (root / "usr/lib/git-core").is_dir():
        env["GIT_EXEC_PATH"] = "{layer}/usr/lib/git-core"
        if (root / "usr/share/git-core/templates").is_dir():
            env["GIT_TEMPLATE_DIR"] = "{layer}/usr/share/git-core/templates"
    return env, {k: v for k, v in paths.items() if v}


def _library_dirs(root: Path) -> list[str]:
    found: set[str] = set()
    for dirpath, _dirnames, filenames in os.walk(root):
        if any(_SHARED_OBJECT.search(name) for name in filenames):
            found.add(os.path.relpath(dirpath, root))
    first = [d for d in _LIB_FIRST if d in found]
    return first + sorted(found - set(first))


def _install_alternatives(root: Path, scripts: list[str]) -> None:
    """Create the links ``update-alternatives --install`` lines would, best priority first."""
    best: dict[str, tuple[int, str]] = {}
    for script in scripts:
        for link, _name, path, priority in _ALTERNATIVE.findall(script.replace("\\\n", " ")):
            if (root / path.lstrip("/")).exists() and int(priority) > best.get(link, (-1, ""))[0]:
                best[link] = (int(priority), path)
    for link, (_priority, path) in best.items():
        where = root / link.lstrip("/")
        if where.exists() or where.is_symlink():
            continue
        where.parent.mkdir(parents=True, exist_ok=True)
        where.symlink_to(os.path.relpath(root / path.lstrip("/"), where.parent))


def _relative_symlinks(root: Path) -> None:
    """Absolute links to files the layer has point at the layer's copy instead."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target = os.readlink(link)
            if os.path.isabs(target) and (root / target.lstrip("/")).exists():
                link.unlink()
                link.symlink_to(os.path.relpath(root / target.lstrip("/"), link.parent))


def _graphviz_config(root: Path, plugins: Path, lib_dirs: list[str]) -> None:
    """Write graphviz's plugin config (what libgvc6's postinst runs: ``dot -c``)."""
    tool = next(
        (
            root / t
            for t in ("usr/bin/dot", "usr/sbin/libgvc6-config-update")
            if (root / t).is_file()
        ),
        None,
    )
    if tool is None:
        return
    env = dict(os.environ)
    env["GVBINDIR"] = str(plugins)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [str(root / d) for d in lib_dirs] + [env.get("LD_LIBRARY_PATH", "")]
    )
    _subprocess.run(
        [str(tool), "-c"],
        env=env,
        timeout=120,
        error=SystemDependencyError,
        hint="graphviz's plugin configuration could not be written",
    )


def _fontconfig(root: Path, final: Path) -> None:
    """A fontconfig file that keeps the system's config and adds the layer's fonts."""
    conf = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">',
        "<fontconfig>",
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>',
    ]
    if (root / "etc/fonts/fonts.conf").is_file():
        conf.append(f'  <include ignore_missing="yes">{final}/etc/fonts/fonts.conf</include>')
    conf += [f"  <dir>{final}/usr/share/fonts</dir>", "</fontconfig>", ""]
    (root / "openflash").mkdir(exist_ok=True)
    (root / "openflash" / "fonts.conf").write_text("\n".join(conf))
