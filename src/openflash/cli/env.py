"""``flash env``: the environments and system layers in the store.

    flash env ls                          what is there, its real size, last use, users
    flash env build [PATH] [ENDPOINT...]  build ahead of time
    flash env prune --older-than 7d --max-size 20G
    flash env rm KEY...

Sizes count a file with several links once (environments share files with uv's cache and with
each other). Nothing in use by a running openflash process is ever removed.
"""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import Annotated, TypedDict

import typer
from rich.table import Table

from openflash.cli.common import (
    Quiet,
    Reporter,
    Verbose,
    console,
    endpoint_defs,
    fail,
    load_project,
)
from openflash.config.volumes import Volume, list_volumes
from openflash.deps.namespace_mode import layer_mode
from openflash.envs.bytecode import prune as prune_bytecode
from openflash.envs.store import Entry, Store
from openflash.prepare import Preparer
from openflash.runtime.process import get_runtime

__all__ = ["app"]

app = typer.Typer(
    help="Environments and system layers: list, build, prune, remove.", no_args_is_help=True
)
KINDS = ("envs", "layers")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?$", re.I)
_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


@functools.cache
def _preparer() -> Preparer:
    """The preparer (its settings, its store in FLASH_HOME); one per command."""
    return Preparer()


def _store() -> Store:
    return _preparer().store


def _footprint(store: Store) -> dict[str, int]:
    """Bytes on disk, each file once: the entries together ("entries"), then what only the
    bytecode store holds ("bytecode", most of it is linked into environments) and apt's cache
    of .debs and indexes ("apt")."""
    entries = [e for kind in KINDS for e in store.entries(kind)]
    apt = _preparer().settings.apt_root
    sizes = store.disk_usage(entries, {"bytecode": store.bytecode, "apt": apt})
    return {
        "entries": sum(sizes[f"{e.kind}/{e.key}"] for e in entries),
        "bytecode": sizes["bytecode"],
        "apt": sizes["apt"],
    }


class _Row(TypedDict):
    """One entry of the store as ``flash env ls`` shows it (its JSON, as is)."""

    kind: str  # environment or layer
    key: str
    bytes: int
    last_used: float | None  # epoch seconds
    endpoints: list[str]
    busy: bool
    packages: object


def _rows(store: Store) -> list[_Row]:
    entries = [e for kind in KINDS for e in store.entries(kind)]
    usage = {f"{e.kind}/{e.key}": store.usage(e) for e in entries}
    # Most recently used first: a shared file counts for the entry that uses it most.
    entries.sort(key=lambda e: -float(usage[f"{e.kind}/{e.key}"].get("last_used", 0)))
    sizes = store.disk_usage(entries)
    rows: list[_Row] = []
    for e in entries:
        ident = f"{e.kind}/{e.key}"
        rows.append(
            {
                "kind": "environment" if e.kind == "envs" else "layer",
                "key": e.key,
                "bytes": sizes[ident],
                "last_used": usage[ident].get("last_used"),
                "endpoints": usage[ident].get("endpoints", []),
                "busy": store.busy(e.kind, e.key),
                "packages": e.info.get("packages"),
            }
        )
    return rows


def _templates(store: Store) -> list[dict[str, object]]:
    """The worker templates running on this store, from the notes they leave (stale ones go)."""
    found = []
    for note in sorted((store.root / "templates").glob("*.json")):
        try:
            info = json.loads(store.read_text(note))  # another user's note: removed
            pid = int(info["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"openflash.workers.forkserver" not in cmdline:
                raise ProcessLookupError(pid)
            rss = next(
                int(line.split()[1]) * 1024
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        except (OSError, ValueError, KeyError, StopIteration, ProcessLookupError):
            note.unlink(missing_ok=True)
            continue
        info.pop("forks", None)  # as it was when the note was written: not worth showing
        found.append({"kind": "template", **info, "rss": rss})
    return found


@app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List environments, layers and volumes with their disk use (and, as a table, running worker
    templates and how layers reach workers). Example: flash env ls"""
    rows = _rows(_store())
    templates = _templates(_store())
    volumes = list_volumes(_preparer().settings)
    if as_json:
        listed: list[object] = [*rows, *(_volume_row(v) for v in volumes)]
        typer.echo(json.dumps(listed, indent=2))
        return
    table = Table(title=f"{_store().root}", title_justify="left")
    for column in ("kind", "key", "size", "last used", "endpoints", "in use"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r["kind"]),
            str(r["key"]),
            _human(int(r["bytes"])),
            _ago(r["last_used"]),
            ", ".join(r["endpoints"]) or "-",
            "yes" if r["busy"] else "",
        )
    console.print(table)
    used = _footprint(_store())
    console.print(
        f"total {_human(sum(used.values()))} (environments and layers {_human(used['entries'])}, "
        f"bytecode {_human(used['bytecode'])}, apt's cache {_human(used['apt'])})"
    )
    if volumes:
        shared = Table(title="volumes (never pruned)", title_justify="left")
        for column in ("name", "size", "files", "folder"):
            shared.add_column(column)
        for v in volumes:
            shared.add_row(v.name, _human(v.bytes), str(v.files), str(v.path))
        console.print(shared)
    mode = layer_mode(_preparer().settings.namespaces)
    console.print(f"system layers: {mode.described}")
    if templates:
        running = Table(title="worker templates", title_justify="left")
        for column in ("pid", "environment", "preloaded", "memory"):
            running.add_column(column)
        for t in templates:
            running.add_row(
                str(t["pid"]),
                str(t["environment"]),
                ", ".join(t.get("preloaded") or []) or "-",  # type: ignore[arg-type]
                _human(int(t["rss"])),  # type: ignore[call-overload]
            )
        console.print(running)


def _volume_row(volume: Volume) -> dict[str, object]:
    """A volume as ``flash env ls --json`` lists it, beside the store's rows."""
    return {
        "kind": "volume",
        "key": volume.name,
        "bytes": volume.bytes,
        "files": volume.files,
        "path": str(volume.path),
    }


@app.command("build")
def build(
    path: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    endpoints: Annotated[
        list[str] | None, typer.Argument(help="Endpoint names (default: all).")
    ] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Build endpoints' environments and layers now. Example: flash env build . my-endpoint"""
    project = load_project(path)
    defs = endpoint_defs(project)
    wanted = set(endpoints or [])
    unknown = wanted - {d.name for d in defs}
    if unknown:
        fail(
            f"no endpoint named {sorted(unknown)[0]!r} in {project.root}",
            f"endpoints: {', '.join(sorted({d.name for d in defs}))}",
        )
    chosen = [d for d in defs if not wanted or d.name in wanted]
    runtime = get_runtime()
    reporter = Reporter(quiet=quiet, verbose=verbose)
    results = reporter.run([(d.name, functools.partial(runtime.build, d)) for d in chosen])
    failed = [(d, r) for d, r in zip(chosen, results, strict=True) if isinstance(r, BaseException)]
    for endpoint, error in failed:
        console.print(f"[red]error:[/red] [bold]{endpoint.name}[/bold]: {error}")
    raise typer.Exit(1 if failed else 0)


@app.command("prune")
def prune(
    older_than: Annotated[
        str | None, typer.Option(help="Remove what was last used longer ago, e.g. 7d.")
    ] = None,
    max_size: Annotated[
        str | None,
        typer.Option(
            help="Then remove the least recently used until the store is this small, e.g. 20G."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would be removed.")] = False,
    quiet: Quiet = False,
) -> None:
    """Remove unused environments and layers, least recently used first.

    Example: flash env prune --older-than 7d --max-size 20G
    """
    if older_than is None and max_size is None:
        fail("say what to prune", "pass --older-than (e.g. 7d) and/or --max-size (e.g. 20G)")
    age = _parse_age(older_than) if older_than else None
    limit = _parse_size(max_size) if max_size else None
    preparer = _preparer()  # its start removes what dead builders left in tmp/
    store = preparer.store
    swept = preparer.swept
    if swept and not quiet:
        console.print(f"removed {swept} folders that builders which died left in tmp/")
    rows = _rows(store)
    total = sum(int(r["bytes"]) for r in rows)
    doomed = []
    for r in reversed(rows):  # least recently used first
        if r["busy"]:
            continue
        old = age is not None and time.time() - float(r["last_used"] or 0) > age
        big = limit is not None and total > limit
        if old or big:
            doomed.append(r)
            total -= int(r["bytes"])
    removed = 0
    for r in doomed:
        kind = "envs" if r["kind"] == "environment" else "layers"
        if not dry_run:
            try:
                store.remove(kind, str(r["key"]))
            except OSError as e:  # it became busy meanwhile
                console.print(f"[yellow]kept {r['key']}: {e}[/yellow]")
                total += int(r["bytes"])
                continue
        removed += 1
        if not quiet:
            console.print(
                f"{'would remove' if dry_run else 'removed'} {r['kind']} {r['key']} "
                f"({_human(int(r['bytes']))})"
            )
    if removed and not dry_run:
        prune_bytecode(store.bytecode)  # what only the removed environments used
    if quiet:
        return
    if dry_run:
        console.print(
            f"{removed} would be removed (nothing was); the environments and layers would "
            f"then hold {_human(total)}"
        )
    else:
        console.print(f"{removed} removed; the environments and layers now hold {_human(total)}")


@app.command("rm")
def rm(
    keys: Annotated[list[str], typer.Argument(help="Keys (or unique prefixes) to remove.")],
) -> None:
    """Remove environments or layers by key. Example: flash env rm 3f2a9c"""
    store = _store()
    entries = [e for kind in KINDS for e in store.entries(kind)]
    for key in keys:
        matches = [e for e in entries if e.key.startswith(key)]
        if len(matches) != 1:
            fail(
                f"{key!r} matches {len(matches)} entries" if matches else f"no entry {key!r}",
                "see `flash env ls` for keys",
            )
        entry: Entry = matches[0]
        try:
            store.remove(entry.kind, entry.key)
        except OSError as e:
            fail(str(e), "stop the process using it first (a running flash run or script)", code=1)
        console.print(f"removed {entry.kind}/{entry.key}")
    prune_bytecode(store.bytecode)


def _parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if not match:
        fail(f"size {text!r} is not understood", "use a number with K, M, G or T, e.g. 20G")
        raise AssertionError
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[match[2].upper()]
    return int(float(match[1]) * scale)


def _parse_age(text: str) -> float:
    match = _AGE.match(text.strip())
    if not match:
        fail(f"age {text!r} is not understood", "use a number with s, m, h, d or w, e.g. 7d")
        raise AssertionError
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _ago(when: object) -> str:
    if not when:
        return "never"
    seconds = time.time() - float(when)  # type: ignore[arg-type]
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "just now"
