"""The generic dpkg triggers, run for a layer after its packages are extracted.

A real install runs these from the maintainer scripts of the packages that own the caches; an
extracted layer needs them run for it, whatever package shipped the files, so no per-package list
is needed for the common cases:

- glib schemas: ``gschemas.compiled`` for the host's and the layer's ``*.gschema.xml`` (GSettings
  refuses a schema that is not compiled);
- shared-mime-info: ``update-mime-database`` over the host's and the layer's ``packages/*.xml``;
- gdk-pixbuf: ``loaders.cache`` listing the host's and the layer's image loaders;
- fontconfig: ``fc-cache`` for the layer's font folders (namespace mode: caches written into the
  layer's ``var/cache/fontconfig``, never the host's; the relocated mode keeps its ``fonts.conf``
  and lets fontconfig scan).

Each runs only where the layer ships such files, with the tool from the layer or else the host's
(skipped, as dpkg would, where neither has it). Inputs are gathered in a scratch folder and every
output is a new file in the layer: the store's linked files and the host are never written. In
the namespace mode the tools run with the layer at its real paths (``run_in_layer``), so the
caches name the paths workers see; in the relocated mode they run with the layer's libraries on
LD_LIBRARY_PATH, and paths name the published layer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from openflash import _subprocess
from openflash.deps.namespace_mode import run_in_layer
from openflash.errors import SystemDependencyError

__all__ = ["run_triggers"]

_SCHEMAS = "usr/share/glib-2.0/schemas"
_MIME = "usr/share/mime"
_FONT_DIRS = ("usr/share/fonts", "usr/local/share/fonts", "etc/fonts")


def run_triggers(
    root: Path, final: Path, *, real_paths: bool, lib_dirs: list[str], multiarch: str
) -> dict[str, str]:
    """Run the triggers the layer being built in ``root`` (published as ``final``) needs; the
    variables a worker then needs (``{layer}`` stands for the layer's path)."""
    runner = _Runner(root, real_paths, lib_dirs)
    env: dict[str, str] = {}
    _glib_schemas(runner)
    _mime(runner)
    loaders = _pixbuf_loaders(runner, final, multiarch)
    if loaders and not real_paths:
        env["GDK_PIXBUF_MODULE_FILE"] = "{layer}/" + loaders
    if real_paths:
        _font_cache(runner)
    return env


class _Runner:
    """Runs a tool from the layer (else the host) the way the mode makes its files visible."""

    def __init__(self, root: Path, real_paths: bool, lib_dirs: list[str]) -> None:
        self.root, self.real_paths, self.lib_dirs = root, real_paths, lib_dirs
        self.scratch = root / "openflash" / "triggers"

    def tool(self, *paths: str) -> str | None:
        """The first of ``paths`` (real paths, e.g. ``/usr/bin/fc-cache``) the layer or the host
        has, as this mode runs it; None if neither has one."""
        for path in paths:
            if (self.root / path.lstrip("/")).exists():
                return path if self.real_paths else str(self.root / path.lstrip("/"))
        return next((path for path in paths if os.path.exists(path)), None)

    def run(self, argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
        hint = f"the layer's {what} could not be made (the trigger a real install runs)"
        if self.real_paths:
            done = run_in_layer(
                self.root, argv, timeout=300, error=SystemDependencyError, env=env or {}
            )
        else:
            variables = {**os.environ, **(env or {})}
            libs = [str(self.root / d) for d in self.lib_dirs]
            variables["LD_LIBRARY_PATH"] = os.pathsep.join(
                [*libs, variables.get("LD_LIBRARY_PATH", "")]
            ).rstrip(os.pathsep)
            done = _subprocess.run(
                argv, env=variables, timeout=300, error=SystemDependencyError, hint=hint
            )
        return done.stdout

    def gather(self, name: str, rel: str, pattern: str) -> Path:
        """A scratch folder holding the host's then the layer's ``rel/pattern`` files (the
        layer's winning, as the overlay would show them)."""
        folder = self.scratch / name
        folder.mkdir(parents=True, exist_ok=True)
        for base in (Path("/"), self.root):
            for source in sorted((base / rel).glob(pattern)):
                if source.is_file():
                    shutil.copyfile(source, folder / source.name)
        return folder


def _glib_schemas(runner: _Runner) -> None:
    layer = runner.root / _SCHEMAS
    if not any(layer.glob("*.gschema.xml")):
        return
    compiler = runner.tool("/usr/bin/glib-compile-schemas")
    if compiler is None:
        return
    folder = runner.gather("schemas", _SCHEMAS, "*")
    (folder / "gschemas.compiled").unlink(missing_ok=True)
    runner.run([compiler, str(folder)], "glib schemas")
    shutil.copyfile(folder / "gschemas.compiled", layer / "gschemas.compiled")


def _mime(runner: _Runner) -> None:
    layer = runner.root / _MIME
    if not any((layer / "packages").glob("*.xml")):
        return
    updater = runner.tool("/usr/bin/update-mime-database")
    if updater is None:
        return
    folder = runner.scratch / "mime"
    shutil.move(runner.gather("mime-packages", f"{_MIME}/packages", "*.xml"), folder / "packages")
    runner.run([updater, str(folder)], "MIME database", {"PKGSYSTEM_ENABLE_FSYNC": "0"})
    for made in sorted(folder.iterdir()):
        if made.name == "packages":
            continue
        target = layer / made.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)  # linked from the store: replaced, never written into
        elif target.exists() or target.is_symlink():
            target.unlink()
        shutil.move(made, target)


def _pixbuf_loaders(runner: _Runner, final: Path, multiarch: str) -> str:
    """Write the layer's ``loaders.cache``; its path in the layer ("" where none is needed)."""
    base = f"usr/lib/{multiarch}/gdk-pixbuf-2.0"
    loaders = sorted((runner.root / base).glob("2.10.0/loaders/*.so"))
    query = runner.tool(f"/{base}/gdk-pixbuf-query-loaders")
    if not loaders or query is None:
        return ""
    found = {p.name: str(p) for p in sorted(Path(f"/{base}").glob("2.10.0/loaders/*.so"))}
    for loader in loaders:
        real = f"/{base}/2.10.0/loaders/{loader.name}"
        found[loader.name] = real if runner.real_paths else str(loader)
    cache = runner.run([query, *found.values()], "gdk-pixbuf loaders cache")
    if runner.real_paths:
        rel = f"{base}/2.10.0/loaders.cache"
    else:
        rel = "openflash/loaders.cache"
        cache = cache.replace(str(runner.root), str(final))
    target = runner.root / rel
    target.unlink(missing_ok=True)
    target.write_text(cache)
    return rel


def _font_cache(runner: _Runner) -> None:
    """``fc-cache`` with the layer at its real paths, caches kept in a scratch folder listed
    first (so that never the host's ``/var/cache/fontconfig``), then moved into the layer."""
    if not any((runner.root / d).is_dir() for d in _FONT_DIRS):
        return
    fc_cache = runner.tool("/usr/bin/fc-cache")
    if fc_cache is None:
        return
    caches = runner.scratch / "fontconfig"
    caches.mkdir(parents=True, exist_ok=True)
    conf = runner.scratch / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">\n'
        f"<fontconfig>\n  <cachedir>{caches}</cachedir>\n"
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n</fontconfig>\n'
    )
    runner.run([fc_cache, "-s"], "fontconfig cache", {"FONTCONFIG_FILE": str(conf)})
    made = sorted(caches.iterdir())
    if made:
        target = runner.root / "var/cache/fontconfig"
        target.mkdir(parents=True, exist_ok=True)
        for cache in made:
            (target / cache.name).unlink(missing_ok=True)
            shutil.move(cache, target / cache.name)
