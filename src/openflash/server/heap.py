"""The server's long-lived objects kept out of the cyclic garbage collector's scans.

A started ``flash run`` holds a large heap that lives as long as it does (FastAPI, pydantic's
schemas, the project's modules and routes). Python's collector walks every tracked object at
each full collection: measured under the HTTP bench, a full collection took about 200 ms with
this heap, and it comes more often as requests leave survivors (the dashboard's recent calls), so
every such pause lands on the requests in flight (the p99). ``settle()`` collects once and then
freezes what is left (``gc.freeze``: moved to a generation that is never scanned), after start and
after each reload; a reload first unfreezes, so that replaced routes can be collected.
"""

from __future__ import annotations

import gc

__all__ = ["settle", "unsettle"]


def settle() -> int:
    """Collect, then freeze every object now alive; how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def unsettle() -> None:
    """Let the collector scan the frozen objects again (before a reload replaces routes)."""
    gc.unfreeze()
