"""Retention: how long a finished ``/run`` job stays in the journal, and what is said after.

A job that ended (COMPLETED, FAILED, CANCELLED, TIMED_OUT) is kept ``FLASH_JOB_TTL`` seconds
after its end (default 1800: Runpod keeps ``/run`` results 30 minutes after completion; 0 keeps
them for ever), then its row (input, output) is removed from the journal. What remains is a
tombstone (id, route, when it ended and was removed), kept ``TOMBSTONE_S`` more, so that
``/status/{id}`` of a removed job answers a 404 that says it expired rather than that it never
was. A job whose webhook is still being delivered is kept until that ends.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from openflash.errors import ConfigError

__all__ = ["DEFAULT_TTL_S", "TOMBSTONE_S", "expired_body", "job_ttl", "sweep_interval"]

#: Runpod's retention of /run results: 30 minutes after completion.
DEFAULT_TTL_S = 1800.0
#: How long a removed job is still known to have expired: a week.
TOMBSTONE_S = 7 * 86400.0


def job_ttl() -> float:
    """FLASH_JOB_TTL in seconds (0: finished jobs are kept for ever)."""
    text = os.environ.get("FLASH_JOB_TTL", "").strip()
    if not text:
        return DEFAULT_TTL_S
    try:
        ttl = float(text)
    except ValueError:
        ttl = -1.0
    if not ttl >= 0:
        raise ConfigError(
            f"FLASH_JOB_TTL={text!r} is not a number of seconds",
            hint="e.g. FLASH_JOB_TTL=1800 (30 minutes, the default), or 0 to keep jobs for ever",
        )
    return ttl


def sweep_interval(ttl: float) -> float:
    """How often expired jobs are looked for: often enough for short TTLs, at most a minute."""
    return min(max(ttl / 4, 0.05), 60.0)


def expired_body(job_id: str, base: str, finished: float, removed: float, ttl: float) -> Any:
    """The 404 body of ``/status`` (and ``/cancel``, ``/stream``) for a removed job."""

    def when(t: float) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(
            timespec="seconds"
        )

    return {
        "id": job_id,
        "status": "EXPIRED",
        "error": (
            f"job {job_id!r} on {base} expired: it ended at {when(finished)} and was removed "
            f"at {when(removed)}; finished jobs are kept {ttl:g} s (FLASH_JOB_TTL). Read a "
            "result within that time, raise FLASH_JOB_TTL, or pass a webhook to /run"
        ),
    }
