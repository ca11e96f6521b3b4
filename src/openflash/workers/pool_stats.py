"""A pool's workers and queue as figures (``Pool.stats``): what the dashboard, ``/health`` and
``flash run``'s endpoint view show of one endpoint's pool."""

from __future__ import annotations

from collections.abc import Sequence

from openflash.workers.lifecycle import Worker, WorkerState

__all__ = ["describe"]


def describe(workers: Sequence[Worker], queued: int, lane_calls: int = 0) -> dict[str, object]:
    """Counts of ``workers`` by state, ``queued`` calls, and one entry per worker (pid, state,
    calls in flight, GPUs, node, how it started: forked or spawned); ``lent``: the workers lent
    to another event loop (runtime/lanes.py), whose calls there count as theirs, and
    ``lane_calls``: the calls answered there (``lane_calls`` of those back, and of those lent)."""
    lanes = [w.lane for w in workers if w.lane is not None]
    return {
        "workers": len(workers),
        "ready": sum(w.state is WorkerState.READY for w in workers),
        "starting": sum(w.state is WorkerState.STARTING for w in workers),
        "busy": sum(bool(_calls(w)) for w in workers),
        "queued": queued,
        "lent": len(lanes),
        "lane_calls": lane_calls + sum(lane.calls for lane in lanes),
        "pids": [w.pid for w in workers if w.pid],
        "detail": [
            {
                "pid": w.pid,
                "state": w.state.value,
                "calls": _calls(w),
                "lent": w.lane is not None,
                "gpus": list(w.handle.gpus) if w.handle else [],
                "node": getattr(w.handle, "node", None),
                "started": getattr(w.handle, "started", None),  # forked or spawned (why)
            }
            for w in workers
        ],
    }


def _calls(worker: Worker) -> int:
    lane = worker.lane
    return len(worker.in_flight) + (len(lane.in_flight) if lane is not None else 0)
