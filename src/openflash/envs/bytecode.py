"""Bytecode for environments: compiled once per source file, hardlinked into every environment.

An environment's package files are hardlinks into uv's cache; its bytecode would be the one thing
each environment holds alone (about a fifth of its disk) and most of its build time. So bytecode
is checked-hash (PEP 552): it names the hash of its source instead of a modification time, which
makes one compiled file right for every copy of that source. Compiled files live in
``FLASH_HOME/bytecode/<cache tag>/`` under the SHA-256 of their source. A build links each
``.py``'s bytecode from there, compiles only what is missing (at once, with the environment's
interpreter), and adds that for the next build. Python checks the hash on import, so a linked
file never goes stale; a file nothing links to any more is removed by :func:`prune`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openflash import _subprocess
from openflash.envs.trust import check_entry, make_dirs

__all__ = ["COMPILER_NAME", "link_bytecode", "prune"]

COMPILE_TIMEOUT_S = 3600.0
#: Fewer files than this to compile are not worth another process.
_FILES_PER_PROCESS = 100
#: Files compiled between two looks at which are wanted first (``link_bytecode``'s ``first``).
_BATCH = 400
#: A source, its bytecode, the stored copy (None: not hashed yet, nothing stored to link).
_Missing = tuple[Path, Path, Path | None]


def link_bytecode(
    site_packages: Path,
    python: Path,
    store_dir: Path,
    *,
    compile_missing: bool = True,
    first: Callable[[], Collection[Path]] | None = None,
    only: Sequence[Path] | None = None,
) -> dict[str, int]:
    """Give every ``.py`` under ``site_packages`` its bytecode; returns how many were linked
    from ``store_dir`` and how many compiled (without ``compile_missing``: how many are left to
    compile, ``pending``, for envs/bytecode_later.py).

    ``python`` is the environment's interpreter, of the same version as this one (the store is
    per cache tag, e.g. ``cpython-311``). Every file appears whole: a link, or a compiled file
    written to a temporary name and renamed (py_compile), so that a process importing meanwhile
    finds either no bytecode (and compiles in memory) or a complete one. Running it again on
    an environment finishes what an interrupted run left.

    With ``first`` (the sources wanted soonest: envs/bytecode_later.py's, those its workers
    imported), the missing files are compiled in batches of ``_BATCH``, ``first()`` asked again
    before each: the files it names that are still missing make the next batch on their own, in
    the order it names them.

    With ``only`` (sources under ``site_packages``), just those are linked or compiled, in that
    order (envs/bytecode_later.py: those a first worker is expected to import, before the rest),
    leaving out a file another process opens before its compiler gets to it (a worker that
    compiled it in memory: ``_COMPILER``); ``compiled`` then counts the files that have their
    bytecode.
    """
    blobs = store_dir / sys.implementation.cache_tag
    if not compile_missing and only is None and not blobs.is_dir():
        # The store has no bytecode for this Python yet (the first environment on a machine):
        # nothing to link, and hashing every source to find that out is on the way to the
        # first result.
        return {"linked": 0, "pending": len(_sources(site_packages))}
    missing: list[_Missing] = []
    linked = 0
    stored = blobs.is_dir()
    for source in _sources(site_packages) if only is None else only:
        pyc = Path(importlib.util.cache_from_source(str(source)))
        if not stored:  # nothing to link: hashed once compiled, not before (a worker waits)
            missing.append((source, pyc, None))
            continue
        blob = _blob(blobs, source)
        if blob is None:
            continue
        # A blob runs at import in every environment linking it: only this user's own.
        check_entry(blob, store_dir)
        if _link(blob, pyc):
            linked += 1
        else:
            missing.append((source, pyc, blob))
    if not compile_missing:
        return {"linked": linked, "pending": len(missing)}
    todo, compiled = missing, 0
    while todo:
        batch, todo = _next_batch(todo, first)
        # Ahead of a worker (``only``): what it opened first is its own (left to the next pass).
        _compile(python, [source for source, _, _ in batch], skip_opened=only is not None)
        for source, pyc, known in batch:
            # A file that does not compile (old syntax, a template) has none; one a worker
            # wrote meanwhile (a timestamp .pyc, where bytecode writing is on) is not stored.
            blob = known or _blob(blobs, source) if _checked_hash(pyc) else None
            if blob is not None:
                compiled += 1
                make_dirs(blob.parent)
                with contextlib.suppress(FileExistsError):  # another build stored it first
                    os.link(pyc, blob)
    return {"linked": linked, "compiled": compiled if only is not None else len(missing)}


def _next_batch(
    todo: list[_Missing], first: Callable[[], Collection[Path]] | None
) -> tuple[list[_Missing], list[_Missing]]:
    """The files to compile next and those left: all at once without ``first``; else the
    wanted ones in ``first()``'s order (at most ``_BATCH``), or the next ``_BATCH`` when none
    is wanted."""
    if first is None:
        return todo, []
    rank = {source: index for index, source in enumerate(first())}
    wanted = sorted((m for m in todo if m[0] in rank), key=lambda m: rank[m[0]])
    soon = wanted[:_BATCH] or todo[:_BATCH]
    chosen = {id(m) for m in soon}
    return soon, [m for m in todo if id(m) not in chosen]


def _blob(blobs: Path, source: Path) -> Path | None:
    """Where the store keeps the bytecode of ``source``'s content; None if it cannot be read."""
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
    except OSError:
        return None
    return blobs / digest[:2] / f"{digest}.pyc"


def _checked_hash(pyc: Path) -> bool:
    """Whether ``pyc`` is there and is checked-hash bytecode (PEP 552 flags 0b11)."""
    try:
        with open(pyc, "rb") as f:
            header = f.read(8)
    except OSError:
        return False
    return len(header) == 8 and int.from_bytes(header[4:8], "little") == 0b11


def prune(store_dir: Path) -> int:
    """Remove stored bytecode no environment links to; returns the bytes freed."""
    freed = 0
    for dirpath, _, filenames in os.walk(store_dir):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if st.st_nlink == 1:
                    os.unlink(path)
                    freed += st.st_blocks * 512
    return freed


def _sources(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        found += [Path(dirpath, name) for name in filenames if name.endswith(".py")]
    return found


def _link(blob: Path, pyc: Path) -> bool:
    try:
        pyc.parent.mkdir(mode=0o755, exist_ok=True)
        os.link(blob, pyc)
    except FileExistsError:
        return True
    except OSError:  # not stored yet (or removed by a prune meanwhile)
        return False
    return True


#: The bytecode compiler's first argument: its name in the process list.
COMPILER_NAME = "openflash-compile"
#: Its second argument, for a pass ahead of a worker importing from source (``skip_opened``).
SKIP_OPENED = "--skip-opened"
#: Compiles the files named on stdin to checked-hash bytecode (PEP 552) beside them, as
#: ``compileall --invalidation-mode checked-hash`` would, but never publishes a short file:
#: py_compile's write ignores a short ``write`` (a disk filling up), and renames a truncated
#: ``.pyc`` into place, which a worker importing meanwhile fails on ("marshal data too short").
#: With ``--skip-opened`` it watches the files' folders (inotify, IN_OPEN) and leaves out a
#: file another process opened before it got there: a worker importing it from source has
#: compiled it in memory already, so that the two never compile the same file (the files left
#: out are compiled by the next pass, for the next worker). Without inotify it skips nothing.
_COMPILER = """
import importlib.util, os, struct, sys
from importlib._bootstrap_external import _code_to_hash_pyc
sources = sys.stdin.read().splitlines()
watch, folders, opened = -1, {}, set()
if sys.argv[2:3] == ["--skip-opened"]:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        watch = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        for folder in {os.path.dirname(source) for source in sources} if watch >= 0 else ():
            number = libc.inotify_add_watch(watch, os.fsencode(folder), 0x20)  # IN_OPEN
            if number >= 0:
                folders[number] = folder
    except (OSError, AttributeError):
        watch = -1
def others_opened():
    while True:
        try:
            data = os.read(watch, 65536)
        except OSError:  # nothing more (EAGAIN)
            return
        at = 0
        while at + 16 <= len(data):
            number, _, _, size = struct.unpack_from("iIII", data, at)
            name = data[at + 16 : at + 16 + size].rstrip(b"\\0")
            if name and number in folders:
                opened.add(os.path.join(folders[number], os.fsdecode(name)))
            at += 16 + size
for source in sources:
    if watch >= 0:
        others_opened()
        if source in opened:
            continue
    target = importlib.util.cache_from_source(source)
    temporary = f"{target}.{os.getpid()}.part"
    try:
        with open(source, "rb") as f:
            data = f.read()
        code = compile(data, source, "exec", dont_inherit=True)
        pyc = memoryview(_code_to_hash_pyc(code, importlib.util.source_hash(data), True))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while pyc:
                pyc = pyc[os.write(fd, pyc):]
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except Exception:  # it does not compile, or the disk is full: no bytecode for it
        try:
            os.unlink(temporary)
        except OSError:
            pass
"""


def _compile(python: Path, sources: list[Path], *, skip_opened: bool = False) -> None:
    """Compile ``sources`` to checked-hash bytecode beside them, with the environment's Python,
    one process per CPU (``_COMPILER`` compiles a list of files one by one); each ``.pyc``
    appears whole or not at all. With ``skip_opened``, a file another process opens before its
    compiler gets to it is left out (``_COMPILER``'s text).

    A file that does not compile is left without bytecode, as installers do.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = max(1, min(cpus or 1, len(sources) // _FILES_PER_PROCESS))
    argv = [str(python), "-c", _COMPILER, COMPILER_NAME, *([SKIP_OPENED] if skip_opened else [])]

    def compile_part(part: list[Path]) -> None:
        _subprocess.run(
            argv,
            input="".join(f"{source}\n" for source in part),
            timeout=COMPILE_TIMEOUT_S,
            check=False,
        )

    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(compile_part, [sources[i::parts] for i in range(parts)]))
