"""A pool's workers and queue as figures (``Pool.stats``): what the dashboard, ``/health`` and
``flash run``'s endpoint view show of one endpoint's pool."""

from __future__ import annotations

from collections.abc import Sequence

from openflash.workers.lifecycle import Worker, WorkerState

__all__ = ["describe"]


def describe(workers: Sequence[Worker], queued: int) -> dict[str, object]:
    """Counts of ``workers`` by state, ``queued`` calls, and one entry per worker (pid, state,
    calls in flight, GPUs, node, how it started: forked or spawned)."""
    return {
        "workers": len(workers),
        "ready": sum(w.state is WorkerState.READY for w in workers),
        "starting": sum(w.state is WorkerState.STARTING for w in workers),
        "busy": sum(bool(w.in_flight) for w in workers),
        "queued": queued,
        "pids": [w.pid for w in workers if w.pid],
        "detail": [
            {
                "pid": w.pid,
                "state": w.state.value,
                "calls": len(w.in_flight),
                "gpus": list(w.handle.gpus) if w.handle else [],
                "node": getattr(w.handle, "node", None),
                "started": getattr(w.handle, "started", None),  # forked or spawned (why)
            }
            for w in workers
        ],
    }
