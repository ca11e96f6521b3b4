"""How a worker's death is told: the exit status or signal, why the pool killed it, its stderr."""

from __future__ import annotations

from collections.abc import Iterable

from openflash.errors import WorkerCrashedError
from openflash.workers.port import WorkerHandle, describe_exit

__all__ = ["died", "died_starting"]


def _crash(
    message: str, code: int | None, tail: str, hint: str | None = None
) -> WorkerCrashedError:
    return WorkerCrashedError(
        message + (f"; its last stderr lines:\n{tail}" if tail else ""),
        hint=hint,
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else None,
        stderr_tail=tail,
    )


def _where(handle: WorkerHandle) -> str:
    """``pid 12`` for a local worker, ``pid 12 on node 10.0.0.2`` for one elsewhere."""
    node = getattr(handle, "node", "local")
    return f"pid {handle.pid}" + (f" on node {node}" if node != "local" else "")


def died_starting(endpoint: str, handle: WorkerHandle, code: int | None) -> WorkerCrashedError:
    """A worker that exited before it said READY."""
    return _crash(
        f"a worker of endpoint {endpoint!r} ({_where(handle)}) exited before it was ready "
        f"({describe_exit(code)})",
        code,
        handle.stderr_tail(),
        hint="the environment's interpreter could not start openflash's worker runtime; "
        "read the lines above",
    )


def died(
    endpoint: str, handle: WorkerHandle, code: int | None, doom: str, labels: Iterable[str]
) -> WorkerCrashedError:
    """A worker that died with calls in flight (``doom``: why the pool killed it, if it did)."""
    why = f" ({doom})" if doom else ""
    return _crash(
        f"the worker of endpoint {endpoint!r} ({_where(handle)}) died with "
        f"{describe_exit(code)}{why} while running " + ", ".join(labels),
        code,
        handle.stderr_tail(),
    )
