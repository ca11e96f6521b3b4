"""Bytecode compiled after an environment is published: its first worker does not wait for it.

The first environment using some packages on a machine (the store has none of their bytecode)
used to compile every ``.py`` before it was published: most of its build (medium set: 6.9 s of
which about 5.5 s compiling, against 1.2 s with the bytecode stored). Now a build links what the
store has (envs/bytecode.py), is published with the rest ``pending`` (the ready marker says how
many), and a detached process, ``python -m openflash.envs.bytecode_later STORE KEY``, compiles
the rest while the first worker starts and imports from source: first the files that worker is
expected to import (:func:`expected_first`; envs/import_order.py), from the last it will import
to the first, so that on a core it leaves idle the worker (importing from the first) finds most
of them compiled ahead of it instead of compiling each in its one thread (medium set: 423 of
3740 files, about 1.2 s of its 1.6 s import from source), leaving out each file the worker opened
before the compiler got to it (envs/opened_files.py, from the compiler's start; then the compiling
process's own watch, envs/bytecode.py): the two never compile the same file; then the rest.
The pass ahead of the worker runs at the priority of the program that started it: it does only
work the worker would otherwise do itself (never the same file twice), so where other work keeps
both cores busy it takes its share from that work rather than waiting (measured under a load of
4: the first result sooner in 4 of 5 pairs, the worker's CPU 0.9-1.1 s instead of 1.1-1.8 s,
bench/RESULTS.md); the rest at a low priority (FLASH_BYTECODE_NICE), since no worker waits for
it.

What "published" means for bytecode: an environment is complete when its packages are; its
bytecode is a cache that Python checks on every import (checked-hash, envs/bytecode.py). Every
``.py`` is in place before the rename that publishes the environment, and a ``.pyc`` appears in
one step (a hard link, or a temporary file renamed by py_compile), so a process importing while
the compiler runs finds either no bytecode for a file (it compiles in memory) or a complete one
for its source: never a torn file, never a missing source. ``.openflash-bytecode`` is written
once every file has its bytecode.

One compiler per environment (the store lock ``bytecode-<key>``, taken without waiting: a second
one leaves). The rest it compiles in batches, first the files of the modules its workers imported
during their first calls as soon as they are recorded (learned preload, envs/preload_records.py),
so that a second worker started from source finds them compiled. A compiler that was killed is
started again by the next process that prepares the environment, and finishes what is left.
Removing the environment stops its compiler first. It is detached on purpose (it outlives the
program that built the environment); one that outlives its environment too (removed behind
openflash's back) makes nothing of it again: it writes only into folders that exist
(tests/envs/test_bytecode_later.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from filelock import Timeout

from openflash import _subprocess
from openflash.envs.bytecode import link_bytecode
from openflash.envs.import_order import predicted_sources
from openflash.envs.opened_files import OpenedFiles
from openflash.envs.preload_records import RECORDS_FOLDER, learned_modules
from openflash.envs.store import READY_MARKER, Store, write_atomic
from openflash.errors import FlashError

__all__ = ["COMPLETE_MARKER", "compile_later", "expected_first", "imported", "is_compiling", "main"]

COMPLETE_MARKER = ".openflash-bytecode"
#: FLASH_BYTECODE_NICE's default.
DEFAULT_NICE = 10
#: The package folder of openflash, for the compiler's path.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
#: How the compiler starts: ``python -m`` of this module, except that the ``openflash`` package
#: is a bare one (its folder, without running its ``__init__``, which imports the public API:
#: pydantic models and all, about 0.5 s of CPU here, before the first file is compiled while the
#: first worker is already importing). What this module imports needs none of it.
_LAUNCH = (
    "import runpy, sys, types\n"
    "package = types.ModuleType('openflash')\n"
    f"package.__path__ = [{str(Path(__file__).resolve().parents[1])!r}]\n"
    "sys.modules['openflash'] = package\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def is_compiling(environment: Path) -> bool:
    """Whether ``environment`` was published with bytecode still to compile, not yet done."""
    try:
        info = json.loads((environment / READY_MARKER).read_text())
    except (OSError, ValueError):
        return False
    pending = int((info.get("bytecode") or {}).get("pending", 0))
    return pending > 0 and not (environment / COMPLETE_MARKER).is_file()


def compile_later(store: Store, key: str) -> int | None:
    """Start the compiler of environment ``key``'s pending bytecode; its pid, or None when
    there is nothing to compile."""
    if not is_compiling(store.path("envs", key)):
        return None
    path = os.pathsep.join(filter(None, [str(_SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    return _subprocess.start_detached(
        [sys.executable, "-c", _LAUNCH, __name__, str(store.root), key],
        env={**os.environ, "PYTHONPATH": path},
    )


def imported(environment: Path) -> set[Path]:
    """The sources of ``environment``'s packages that its workers imported during their first
    calls (every learned-preload record's modules, envs/preload_records.py): compiled before the
    rest, so that the next worker or template starting meanwhile finds their bytecode."""
    return set(_imported_in_order(environment))


def expected_first(environment: Path) -> list[Path]:
    """The sources a worker of ``environment`` is expected to import, in the order expected:
    what its workers imported (:func:`imported`, in the order they imported it), then, for the
    very first worker, of which nothing is known yet, the guess of envs/import_order.py (the
    distributions' top-level modules and what they import as they load). Each once."""
    site_packages = next((environment / "lib").glob("python*/site-packages"), None)
    if site_packages is None:
        return []
    return _expected(_imported_in_order(environment), predicted_sources(site_packages))


def _expected(imported: list[Path], guessed: list[Path]) -> list[Path]:
    return [source for source in dict.fromkeys(imported + guessed) if source.is_file()]


def _folders(site_packages: Path) -> list[Path]:
    """Every folder under ``site_packages`` but the bytecode's."""
    found = []
    for dirpath, dirnames, _ in os.walk(site_packages):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        found.append(Path(dirpath))
    return found


def _imported_in_order(environment: Path) -> list[Path]:
    site_packages = next((environment / "lib").glob("python*/site-packages"), None)
    if site_packages is None:
        return []
    found: list[Path] = []
    for record in sorted((environment / RECORDS_FOLDER).glob("*.json")):
        for name in learned_modules(record):
            base = site_packages.joinpath(*name.split("."))
            found += [base / "__init__.py", base.with_name(base.name + ".py")]
    return found


def main(argv: list[str]) -> int:
    """Compile environment ``argv[2]``'s pending bytecode in the store at ``argv[1]``."""
    store, key = Store(Path(argv[1])), argv[2]
    environment = store.path("envs", key)
    started = time.monotonic()
    try:
        with store.lock("bytecode", key, timeout=0):
            if not store.is_ready("envs", key) or not is_compiling(environment):
                return 0
            # Named, so that removing the environment stops it (Store.remove).
            write_atomic(store.root / "locks" / f"bytecode-{key}.pid", str(os.getpid()))
            site_packages = next((environment / "lib").glob("python*/site-packages"))
            python = environment / "bin" / "python"
            # What the first worker will import, before the rest, from the last file it will
            # import to the first: the worker, importing meanwhile from the first, compiles
            # each file it finds without bytecode itself; from the other end the two never
            # compile the same file until they meet (measured: 0.2-0.35 s sooner than in the
            # worker's order, bench/RESULTS.md). At the caller's priority; the rest at
            # FLASH_BYTECODE_NICE's.
            # Files the worker opened already (before the compiler's own watch, _COMPILER's)
            # are left to the second pass: the guess reads each of its files once itself.
            with OpenedFiles(_folders(site_packages)) as watch:
                guessed = predicted_sources(site_packages)
                expected = _expected(_imported_in_order(environment), guessed)
                opened, read_once = watch.counts(), set(guessed)
            ahead = [f for f in expected[::-1] if opened[f] <= (f in read_once)]
            soon = link_bytecode(site_packages, python, store.bytecode, only=ahead)
            _lower_priority(os.environ.get("FLASH_BYTECODE_NICE", ""))
            done = link_bytecode(
                site_packages, python, store.bytecode, first=lambda: imported(environment)
            )
            # The second pass counted the first pass's files as linked (their .pyc was there).
            done = {
                "linked": max(0, done["linked"] - soon["compiled"]),
                "compiled": done["compiled"] + soon["compiled"],
            }
            seconds = round(time.monotonic() - started, 3)
            write_atomic(environment / COMPLETE_MARKER, json.dumps({**done, "seconds": seconds}))
    except Timeout:
        return 0  # another compiler has it
    except (OSError, StopIteration, FlashError) as e:  # removed meanwhile, or a full disk
        print(f"openflash: bytecode of {key} not finished: {e}", file=sys.stderr)
        return 1
    return 0


def _lower_priority(text: str) -> None:
    """Yield the CPUs to the workers: FLASH_BYTECODE_NICE (0-19, default 10), as nice and, where
    the kernel groups processes by session (autogroup, Linux's default: nice then only ranks the
    processes of one session), for this session's group, which its compileall processes share.
    At 10 it gets about a tenth of a CPU that a worker wants, and finishes on a busy machine."""
    try:
        level = min(19, max(0, int(text))) if text.strip() else DEFAULT_NICE
    except ValueError:
        level = DEFAULT_NICE
    if not level:
        return
    os.nice(level)
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(level))
    except OSError:  # no autogroup here: nice is enough
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv))
