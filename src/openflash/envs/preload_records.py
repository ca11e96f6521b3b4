"""Learned preload: the modules an endpoint's workers imported during their first calls, kept in
the store next to their environment, for the endpoint's next template to preload.

    FLASH_HOME/envs/<key>/.openflash-preload/<endpoint>-<fingerprint>.json
        {"endpoint": ..., "fingerprint": ..., "functions": {"process": ["scipy", ...]}}

A record lives inside its environment's folder, so it goes with it (``flash env rm``, prune);
its name holds the fingerprint of the project's files, so that a changed project file makes
another record (the old one is removed when the new one is written): what the previous version
of the code imported is not preloaded for this one. Writes are atomic (a temporary file renamed
into place) under a file lock, so that two processes adding to one record lose nothing. A record
that is not this user's alone (planted), unreadable or garbled is refused with a warning naming
it, and nothing of it is preloaded.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from openflash.envs import trust
from openflash.envs.store import READY_MARKER, content_key, write_atomic

__all__ = ["RECORDS_FOLDER", "PreloadRecord", "learned_modules"]

logger = logging.getLogger("openflash")

RECORDS_FOLDER = ".openflash-preload"
#: The most module names one record keeps (a worker importing thousands is not usual).
MAX_MODULES = 5000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True, slots=True)
class PreloadRecord:
    """Where one endpoint's learned modules are kept, for one version of its project's files."""

    #: The environment's folder in the store (``FLASH_HOME/envs/<key>``).
    environment: Path
    endpoint: str
    #: The project files' fingerprint ("" without a project).
    fingerprint: str = ""

    @property
    def path(self) -> Path:
        return self.environment / RECORDS_FOLDER / f"{self._stem}-{self.fingerprint or 'none'}.json"

    @property
    def _stem(self) -> str:
        return content_key("preload", self.endpoint)

    def modules(self) -> tuple[str, ...]:
        """Every function's learned modules, in the order they were first imported."""
        return learned_modules(self.path)

    def functions(self) -> dict[str, list[str]]:
        """The learned modules of each function."""
        return self._functions()

    def add(self, function: str, modules: list[str]) -> bool:
        """Add ``modules`` to ``function``'s; False when the environment is gone (removed)."""
        names = [m for m in modules if _NAME.match(m)]
        if not names or not (self.environment / READY_MARKER).is_file():
            return False
        folder = self.environment / RECORDS_FOLDER
        trust.make_dirs(folder)
        with FileLock(str(folder / f"{self._stem}.lock"), mode=0o644):
            functions = self._functions()
            known = functions.setdefault(function, [])
            total = sum(len(v) for v in functions.values())
            for name in names:
                if name not in known and total < MAX_MODULES:
                    known.append(name)
                    total += 1
            record = {"endpoint": self.endpoint, "fingerprint": self.fingerprint}
            write_atomic(self.path, json.dumps({**record, "functions": functions}))
            for other in folder.glob(f"{self._stem}-*.json"):  # other versions of the project
                if other != self.path:
                    other.unlink(missing_ok=True)
        return True

    def _functions(self) -> dict[str, list[str]]:
        return _read(self.path)


def learned_modules(path: Path) -> tuple[str, ...]:
    """The modules of the record at ``path`` (a ``PreloadRecord``'s), every function's, in the
    order they were first imported; () when there is none."""
    found: dict[str, None] = {}
    for names in _read(path).values():
        found.update(dict.fromkeys(names))
    return tuple(found)


def _read(path: Path) -> dict[str, list[str]]:
    """The record's functions; {} when there is none, or when it is refused: another user's
    or writable by others (planted), unreadable or garbled. A refused record is told once
    (the ``openflash`` logger, naming the file) and nothing of it is preloaded."""
    try:
        data = json.loads(trust.read_text(path, path.parents[1]))  # the environment's own
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:  # StorePermissionError is a PermissionError
        _refused(path, getattr(e, "message", None) or str(e))
        return {}
    functions = data.get("functions") if isinstance(data, dict) else None
    if not isinstance(functions, dict):
        _refused(path, "it is not a record of learned modules (no 'functions' object)")
        return {}
    return {
        str(k): [m for m in v if isinstance(m, str) and _NAME.match(m)]
        for k, v in functions.items()
        if isinstance(v, list)
    }


_TOLD: set[tuple[Path, str]] = set()


def _refused(path: Path, why: str) -> None:
    if (path, why) in _TOLD:
        return
    _TOLD.add((path, why))
    logger.warning(
        "openflash: the learned-preload record %s was refused and nothing of it is preloaded: "
        "%s; remove it (it is learned again from the next calls)",
        path,
        why,
    )
