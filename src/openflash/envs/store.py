"""The content-addressed store under FLASH_HOME.

    FLASH_HOME/
      envs/<key>/        a virtual environment        (ready once <key>/.openflash-ready exists)
      layers/<key>/      an extracted system layer    (same rule)
      runtime/<key>/     openflash's worker runtime   (same rule)
      bytecode/          compiled .py files by source hash, hardlinked into envs
      resolutions/       cached uv resolutions (JSON), written atomically
      index-seen.json    when uv last asked the index about each package (deps.resolve)
      locks/             one file lock per (kind, key)
      tmp/               builds in progress; published into place by rename
      uv-cache/          uv's cache, on the same disk, so installs are hardlinks
      store.log          one JSON line per build: what, key, pid, seconds

Every artifact is built in ``tmp/``, renamed into place, and only then marked ready; a directory
without its marker does not exist. Builders of one key take its file lock; whoever loses the race
waits, finds the marker and reuses the winner's result. That holds across threads and processes.
A wait says whose build it waits for and is bounded (FLASH_BUILD_LOCK_TIMEOUT; envs/build_locks.py).

Nothing in the store is group- or world-writable (whatever the umask; the root is 0700), and
whatever is read from it (entries, markers, usage records, store.log, locks, and through
``read_text`` resolutions and the like) must be this user's alone, opened without following a
link: ``envs.trust`` owns those checks. A build that fills the disk, or a record that cannot be
written for lack of space, raises StoreFullError and keeps nothing. What builders that died left
in ``tmp/`` is removed by ``sweep_tmp`` (at every preparer's start, and by ``flash env prune``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from filelock import Timeout

from openflash.envs import trust
from openflash.envs.build_locks import hold_build_lock
from openflash.envs.disk_full import disk_full, free_space, full_error
from openflash.envs.stale_writers import kill_writers
from openflash.envs.trust import check_owner, drop_shared_write, make_dirs, umask
from openflash.errors import StoreFullError, StorePermissionError

__all__ = ["READY_MARKER", "Entry", "Store", "content_key"]

READY_MARKER = ".openflash-ready"
USAGE_FILE = ".openflash-used.json"
USAGE_LOCK = ".openflash-used.lock"
IN_USE_FILE = ".openflash-in-use"
KINDS = ("envs", "layers", "runtime", "debs")


def content_key(*parts: object) -> str:
    """A short, stable hash of ``parts`` (JSON-encoded); names store entries."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Entry:
    kind: str
    key: str
    path: Path
    #: What the ready marker records: when it was built, how long it took, what it holds.
    info: dict[str, Any]


@dataclass(frozen=True)
class Store:
    root: Path

    def path(self, kind: str, key: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown store kind {kind!r}")
        return self.root / kind / key

    def is_ready(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / READY_MARKER).is_file()

    def read_text(self, path: Path) -> str:
        """A file of the store, read only if it and the folders above it are this user's alone
        (``envs.trust``); FileNotFoundError as ``open``."""
        return trust.read_text(path, self.root)

    @property
    def bytecode(self) -> Path:
        return self.root / "bytecode"

    @property
    def resolutions(self) -> Path:
        return self.root / "resolutions"

    @contextlib.contextmanager
    def lock(self, kind: str, key: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the build lock of ``(kind, key)``, waiting ``timeout`` seconds at most (None:
        FLASH_BUILD_LOCK_TIMEOUT; 0: not at all, filelock's ``Timeout`` when it is held);
        envs/build_locks.py."""
        locks = self.root / "locks"
        trust.check_levels(locks, self.root)
        make_dirs(locks)
        path = locks / f"{kind}-{key}.lock"
        check_owner(path)  # before opening it: a planted link would be followed and truncated
        wait = timeout != 0
        with hold_build_lock(path, f"{kind}/{key}", timeout if wait else None, wait=wait):
            check_owner(path)
            yield

    def build_once(self, kind: str, key: str, build: Callable[[Path], dict[str, Any]]) -> Path:
        """The ready directory for ``(kind, key)``, building it with ``build(tmp_dir)`` if needed.

        ``build`` fills ``tmp_dir`` and returns facts to record in the marker. It runs at most
        once per key across threads and processes; if it raises, nothing is published.
        """
        final = self.path(kind, key)
        trust.check_levels(final.parent, self.root)
        if self.is_ready(kind, key):
            check_owner(final, final / READY_MARKER)
            return final
        with self.lock(kind, key):
            if self.is_ready(kind, key):
                check_owner(final, final / READY_MARKER)
                return final
            self._clear_leftovers(kind, key)
            tmp_root = self.root / "tmp"
            started = time.monotonic()
            tmp = None
            try:
                make_dirs(tmp_root)
                tmp = Path(tempfile.mkdtemp(prefix=f"{kind}-{key}-", dir=tmp_root))
                info = build(tmp)
                if umask() & 0o022 != 0o022:
                    drop_shared_write(tmp)
                make_dirs(final.parent)
                os.rename(tmp, final)
                tmp = None
                seconds = round(time.monotonic() - started, 3)
                marker = {"kind": kind, "key": key, "built_at": time.time(), "seconds": seconds}
                marker.update(info)
                write_atomic(final / READY_MARKER, json.dumps(marker, indent=1, default=str))
            except BaseException as e:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
                if disk_full(e):
                    shutil.rmtree(final, ignore_errors=True)  # renamed, not marked: not there
                    raise StoreFullError(
                        f"no space left on the device holding the store {self.root} while "
                        f"building {kind}/{key} ({free_space(self.root)} free): "
                        f"{getattr(e, 'message', None) or e}",
                        path=str(self.root),
                    ) from e
                raise
            self.record(
                {"event": "built", "kind": kind, "key": key, "pid": os.getpid(), "seconds": seconds}
            )
            return final

    def entries(self, kind: str) -> list[Entry]:
        """The ready entries of ``kind`` (envs, layers, runtime, debs: unpacked .debs), with
        what their markers say."""
        if kind not in KINDS:
            raise ValueError(f"unknown store kind {kind!r}")
        found = []
        base = self.root / kind
        trust.check_levels(base, self.root)
        for path in sorted(base.iterdir()) if base.is_dir() else []:
            if (path / READY_MARKER).is_file():
                check_owner(path)
                try:
                    info = json.loads(trust.read_text(path / READY_MARKER, self.root))
                except ValueError:
                    info = {}
                found.append(Entry(kind, path.name, path, info))
        return found

    # Usage: what uses an entry, and since when, for `flash env ls` and garbage collection.

    def record_use(self, kind: str, key: str, endpoint: str) -> None:
        """Note that ``endpoint`` uses this entry now."""
        path = self.path(kind, key) / USAGE_FILE
        # Read, add, write under a lock: two endpoints noting their use at once (two processes,
        # or a Ray node's agent serving two drivers' calls) must not lose one of the two.
        try:
            fd = trust.open_trusted(
                self.path(kind, key) / USAGE_LOCK, self.root, os.O_WRONLY | os.O_CREAT
            )
        except StorePermissionError:
            raise
        except OSError:
            return  # the entry went away meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                usage = json.loads(trust.read_text(path, self.root))
            except (FileNotFoundError, ValueError):
                usage = {"endpoints": []}
            usage["last_used"] = time.time()
            usage["endpoints"] = sorted(set(usage.get("endpoints", [])) | {endpoint})
            with contextlib.suppress(OSError):
                write_atomic(path, json.dumps(usage))
        finally:
            os.close(fd)

    def usage(self, entry: Entry) -> dict[str, Any]:
        try:
            text = trust.read_text(entry.path / USAGE_FILE, self.root)
            usage: dict[str, Any] = json.loads(text)
            return usage
        except (FileNotFoundError, ValueError):
            return {"endpoints": [], "last_used": entry.info.get("built_at", 0.0)}

    def hold(self, kind: str, key: str) -> IO[bytes]:
        """A shared lock that marks the entry in use for as long as the returned file is open."""
        path = self.path(kind, key) / IN_USE_FILE
        fd = trust.open_trusted(path, self.root, os.O_WRONLY | os.O_CREAT, 0o644)
        handle = os.fdopen(fd, "ab")
        fcntl.flock(handle, fcntl.LOCK_SH)
        return handle

    def busy(self, kind: str, key: str) -> bool:
        """Whether a process holds the entry (a runtime that has it prepared)."""
        try:
            path = self.path(kind, key) / IN_USE_FILE
            fd = trust.open_trusted(path, self.root, os.O_WRONLY | os.O_CREAT, 0o644)
            with os.fdopen(fd, "ab") as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(probe, fcntl.LOCK_UN)
                return False
        except StorePermissionError:
            raise
        except OSError:
            return False

    def disk_usage(
        self, entries: list[Entry], folders: dict[str, Path] | None = None
    ) -> dict[str, int]:
        """Bytes of disk each entry uses (keyed ``kind/key``), then each of ``folders`` (keyed
        by its name there), in order, a file with several links counted once.

        As ``du -sB1`` does with several arguments: a hardlink shared by two entries (or with
        uv's cache, outside them) counts for the first that has it. So the sizes add up to the
        disk all of them use together; a missing folder uses 0 bytes.
        """
        seen: set[tuple[int, int]] = set()
        sizes = {f"{e.kind}/{e.key}": _folder_usage(e.path, seen) for e in entries}
        for name, folder in (folders or {}).items():
            sizes[name] = _folder_usage(folder, seen)
        return sizes

    def remove(self, kind: str, key: str) -> bool:
        """Remove an entry: it disappears at once (a rename), then its files are deleted.

        Takes the key's lock, so it never removes what a builder is publishing; stops an
        environment's bytecode compiler first. Returns whether there was anything to remove.
        """
        path = self.path(kind, key)
        compiler = self._compiler_stopped(key) if kind == "envs" else contextlib.nullcontext()
        with self.lock(kind, key), compiler:
            if not path.exists():
                return False
            if self.busy(kind, key):
                raise OSError(f"{kind}/{key} is in use by a running openflash process")
            tmp_root = self.root / "tmp"
            make_dirs(tmp_root)
            doomed = Path(tempfile.mkdtemp(prefix=f"removing-{kind}-{key}-", dir=tmp_root))
            os.rename(path, doomed / "entry")
        shutil.rmtree(doomed, ignore_errors=True)
        self.record({"event": "removed", "kind": kind, "key": key, "pid": os.getpid()})
        return True

    def sweep_tmp(self) -> int:
        """Remove what dead builders left in ``tmp/`` (a build whose key's lock nobody holds,
        with the orphaned commands still writing into it: envs/stale_writers.py; a removal's
        leftovers); a live builder's folder is kept. Returns how many went."""
        tmp_root = self.root / "tmp"
        if not tmp_root.is_dir():
            return 0
        trust.check_levels(tmp_root, self.root)
        swept = 0
        for stale in sorted(tmp_root.iterdir()):
            kind, _, rest = stale.name.partition("-")
            key = rest.rpartition("-")[0]
            if kind == "removing":
                shutil.rmtree(stale, ignore_errors=True)  # its remover may run: both ignore
            elif kind in KINDS and key and "/" not in key:
                try:
                    with self.lock(kind, key, timeout=0):
                        kill_writers(stale)  # its dead builder's orphaned commands
                        shutil.rmtree(stale, ignore_errors=True)
                except Timeout:
                    continue  # its builder is alive
            else:
                continue
            swept += 1
        return swept

    @contextlib.contextmanager
    def _compiler_stopped(self, key: str) -> Iterator[None]:
        """Hold environment ``key``'s bytecode lock, first stopping the compiler holding it (its
        session, named by ``locks/bytecode-<key>.pid``; every file it writes appears whole)."""
        try:
            with self.lock("bytecode", key, timeout=0):
                yield
                return
        except Timeout:
            with contextlib.suppress(OSError, ValueError):  # the holder, if the note is its own
                pid = int((self.root / "locks" / f"bytecode-{key}.pid").read_text())
                if key.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    os.killpg(pid, 9)
        with self.lock("bytecode", key, timeout=60):
            yield

    def _clear_leftovers(self, kind: str, key: str) -> None:
        """Remove what an interrupted build of this key left (the caller holds its lock)."""
        shutil.rmtree(self.path(kind, key), ignore_errors=True)
        tmp_root = self.root / "tmp"
        if tmp_root.is_dir():
            for stale in tmp_root.glob(f"{kind}-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)

    def record(self, event: dict[str, Any]) -> None:
        """Append one JSON line to ``store.log`` (a single write, safe across processes)."""
        trust.ensure_root(self.root)
        line = json.dumps({"time": time.time(), **event}, default=str) + "\n"
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fd = trust.open_trusted(self.root / "store.log", self.root, flags, 0o644)
        try:
            os.write(fd, line.encode())
        except OSError as e:
            raise full_error(e, self.root / "store.log") from e
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        """Every line of ``store.log``, oldest first."""
        try:
            text = trust.read_text(self.root / "store.log", self.root)
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _folder_usage(folder: Path, seen: set[tuple[int, int]]) -> int:
    """Bytes of disk under ``folder`` not in ``seen`` (device, inode), which it extends."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        paths = [dirpath, *(os.path.join(dirpath, n) for n in filenames)]
        # Links to folders are listed with the folders and not walked into.
        paths += [p for d in dirnames if os.path.islink(p := os.path.join(dirpath, d))]
        for path in paths:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    try:
        make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise full_error(e, path) from e
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise full_error(e, path) from e
