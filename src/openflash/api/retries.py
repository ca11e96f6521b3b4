"""Retries: a failed call is sent again, after a growing delay, up to a bound.

After Modal's ``retries=`` (an int, or ``modal.Retries(max_retries, backoff_coefficient,
initial_delay, max_delay)``) and Ray's ``max_retries``/``retry_exceptions``. ``retry_on`` says what
is retried: exception classes (matched against the exception the function raised in its
worker), ``"crash"`` (its worker died: WorkerCrashedError, the call goes to a new worker) and
``"timeout"`` (ExecutionTimeoutError). Each call has its own attempts; a call whose caller went
away (cancelled) is never retried; generator functions (streams) are not retried.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openflash.errors import ConfigError, ExecutionTimeoutError, RemoteError, WorkerCrashedError
from openflash.workers.calls import Call

__all__ = ["Retries", "attempt_sink", "retried", "retry_policy"]

logger = logging.getLogger("openflash")

#: Told the number of each attempt after the first (2, 3, ...) of the retried calls made in this
#: context: a ``/run`` job's, so that ``/status`` shows it (server/jobs.py).
attempt_sink: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar(
    "openflash_attempt_sink", default=None
)


@dataclass(frozen=True)
class Retries:
    """How a failed call is retried: ``max_retries`` more attempts, the n-th after
    ``min(initial_delay * backoff_coefficient ** (n - 1), max_delay)`` seconds."""

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0
    retry_on: tuple[Any, ...] = (Exception, "crash", "timeout")

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or not 0 <= self.max_retries <= 100:
            raise ConfigError(
                f"Retries(max_retries={self.max_retries!r}) must be an int from 0 to 100",
                hint="e.g. Retries(max_retries=3)",
            )
        if self.initial_delay < 0 or self.max_delay < 0 or self.backoff_coefficient < 1:
            raise ConfigError(
                f"{self!r} has a negative delay or a backoff_coefficient below 1",
                hint="use delays >= 0 (seconds) and backoff_coefficient >= 1",
            )
        for item in self.retry_on:
            if item not in ("crash", "timeout") and not (
                isinstance(item, type) and issubclass(item, BaseException)
            ):
                raise ConfigError(
                    f"Retries(retry_on=...) has {item!r}",
                    hint='name exception classes, "crash" or "timeout"',
                )

    def delay(self, retry: int) -> float:
        """Seconds before the ``retry``-th retry (1 for the first)."""
        return float(
            min(self.initial_delay * self.backoff_coefficient ** (retry - 1), self.max_delay)
        )

    def retries(self, error: BaseException) -> bool:
        """Whether ``error`` (a call's failure) is one to retry."""
        if isinstance(error, WorkerCrashedError):
            return "crash" in self.retry_on
        if isinstance(error, ExecutionTimeoutError):
            return "timeout" in self.retry_on
        if isinstance(error, RemoteError):
            raised = error.exception if error.exception is not None else error
            classes = tuple(c for c in self.retry_on if isinstance(c, type))
            return isinstance(raised, classes)
        return False  # openflash's own errors (a build that failed) are not retried


def retry_policy(retries: int | Retries | None) -> Retries | None:
    """``retries=`` as given to remote() or Endpoint(): None, an int, or a Retries."""
    if retries is None or isinstance(retries, Retries):
        return retries if retries is None or retries.max_retries else None
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise ConfigError(
            f"retries={retries!r} must be an int or openflash.Retries(...)",
            hint="e.g. retries=2, or retries=Retries(max_retries=3, initial_delay=0.5)",
        )
    return retry_policy(Retries(max_retries=retries))


async def retried(policy: Retries, run: Any, call: Call, again: Callable[[], Call]) -> Any:
    """``run(call)``, sent ``again()`` under ``policy`` while it fails (never once cancelled)."""
    attempt = 1
    while True:
        try:
            return await run(call, again)
        except Exception as e:
            if attempt > policy.max_retries or not policy.retries(e):
                raise
            delay = policy.delay(attempt)
            logger.warning(
                "openflash: %s failed (attempt %d of %d: %s); retrying in %g s",
                call.label,
                attempt,
                policy.max_retries + 1,
                type(e).__name__,
                delay,
            )
            await asyncio.sleep(delay)
            attempt += 1
            sink = attempt_sink.get()
            if sink is not None:
                sink(attempt)
            call = again()
