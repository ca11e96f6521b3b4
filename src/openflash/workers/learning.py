"""What a worker imported during its first calls, told to its pool (an IMPORTED frame), so that
the endpoint's next template preloads it (learned preload: envs/preload_records.py keeps it).

Reading a function's code finds the modules it names (``import scipy.stats``), not those it
imports by a computed name, through a library's lazy imports, or while unpickling its arguments.
The worker knows: after each of its first ``LEARNED_CALLS`` calls it looks at which modules
appeared in ``sys.modules`` since it started, and sends the new ones, in the order they were
imported. Only modules of its environment and of the standard library count: the project's own
modules and openflash's runtime are left out (a template keyed by the project's fingerprint
already preloads what the code names of them).

This module is part of the worker runtime: it imports the standard library only.
"""

from __future__ import annotations

import json
import os
import sys

from openflash.workers import protocol

__all__ = ["LEARNED_CALLS", "Learning", "decode", "encode"]

#: How many calls of a worker are watched.
LEARNED_CALLS = 3


class Learning:
    """Watches the first calls of one worker process."""

    def __init__(self) -> None:
        self.seen = set(sys.modules)
        self.calls = 0
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        # As given and resolved: module paths are compared as strings (no system call per
        # module, so that a first call importing a thousand modules is not slowed).
        prefixes |= {os.path.realpath(p) for p in prefixes}
        self.roots = tuple(os.path.join(p, "") for p in prefixes)

    def with_imports(self, call_id: int, reply: list[protocol.Buffer]) -> list[protocol.Buffer]:
        """A call's ``reply`` (a frame's parts), after an IMPORTED frame if the call imported
        anything."""
        imported = self.after_call()
        if imported is None:
            return reply
        return [protocol.encode(protocol.IMPORTED, call_id, imported), *reply]

    def after_call(self) -> bytes | None:
        """The IMPORTED payload for modules imported since the last look (None: none, or past
        the first calls)."""
        if self.calls >= LEARNED_CALLS:
            return None
        self.calls += 1
        new = [name for name in list(sys.modules) if name not in self.seen]
        self.seen.update(new)
        kept = [name for name in new if self._ours(name)]
        return encode(kept) if kept else None

    def _ours(self, name: str) -> bool:
        """Whether ``name`` is a real module (not an alias) of the environment or stdlib."""
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if spec is None or spec.name != name or name.startswith("__"):
            return False
        origin = spec.origin
        if origin in ("built-in", "frozen"):
            return True
        if not origin:  # a namespace package: where its folders are
            paths = list(getattr(spec, "submodule_search_locations", None) or [])
            return bool(paths) and all(self._under_prefix(p) for p in paths)
        return self._under_prefix(origin)

    def _under_prefix(self, path: str) -> bool:
        return path.startswith(self.roots)


def encode(modules: list[str]) -> bytes:
    return json.dumps({"modules": modules}).encode()


def decode(payload: bytes) -> list[str]:
    """The module names of an IMPORTED payload (nothing that is not a name)."""
    try:
        modules = json.loads(payload).get("modules", [])
    except (ValueError, AttributeError):
        return []
    return [m for m in modules if isinstance(m, str) and m and len(m) < 256]
