"""Hot reload: watch the project's Python files and reload routes when one changes.

Unlike a process restart, this keeps the runtime: endpoints whose code and dependencies did not
change keep their warm workers; a function whose code changed is sent to them anew at its next
call; a changed dependency list gets its environment built in the background.
"""

from __future__ import annotations

from pathlib import Path

import watchfiles
from fastapi import FastAPI

from openflash.project import project_files
from openflash.server import heap
from openflash.server.state import ServerState

__all__ = ["watch"]

IGNORE_FILES = frozenset({".gitignore", ".flashignore"})


async def watch(state: ServerState, app: FastAPI, *, debounce_ms: int = 300) -> None:
    """Reload ``app``'s routes whenever a project .py file (or an ignore file) changes."""

    def relevant(change: watchfiles.Change, path: str) -> bool:
        name = Path(path).name
        if name in IGNORE_FILES:
            return True
        return name.endswith(".py") and ".flash" not in Path(path).parts

    async for changes in watchfiles.awatch(
        state.root, watch_filter=relevant, debounce=debounce_ms, recursive=True
    ):
        known = set(state.project.modules) | {f.file for f in state.project.failures}
        current = set(project_files(state.root))
        touched = {Path(p) for _, p in changes}
        if not any(p.name in IGNORE_FILES or p in current or p in known for p in touched):
            continue
        names = ", ".join(sorted(str(p.relative_to(state.root)) for p in touched))
        state.say(f"changed: {names}")
        try:
            # On the event loop, so that no request sees the routes half swapped.
            heap.unsettle()  # the replaced routes may be collected
            state.reload(app)
        except Exception as e:  # a reload must never stop the server
            state.say(f"reload failed: {type(e).__name__}: {e}", "error")
        finally:
            heap.settle()
