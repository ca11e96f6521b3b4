"""How a worker's death is told: the exit status or signal, why the pool killed it, its stderr."""

from __future__ import annotations

from collections.abc import Iterable

from openflash.errors import WorkerCrashedError
from openflash.workers.port import WorkerHandle, describe_exit

__all__ = ["died", "died_starting", "process_stopped", "started_late"]


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


def started_late(
    endpoint: str,
    handle: WorkerHandle | None,
    limit: float,
    stopped: bool,
    waited: str | None = None,
) -> WorkerCrashedError:
    """A worker (``handle``; None: the backend gave none) not ready within ``limit`` seconds,
    and killed for it; ``stopped``: it was stopped (SIGSTOP, Ctrl-Z) when the bound passed;
    ``waited``: what the backend's start waited on, given up (Backend's ``start_overdue``)."""
    bound = f"{limit:g} s (FLASH_WORKER_START_TIMEOUT)"
    if handle is None:
        why = f": {waited}" if waited else ""
        return WorkerCrashedError(
            f"no worker of endpoint {endpoint!r} was started within {bound}{why}",
            hint="the machine may be overloaded, or what starts workers is stuck; call again, "
            "or raise FLASH_WORKER_START_TIMEOUT (seconds; 0 waits for ever)",
        )
    state = ", stopped" if stopped else ""
    advice = (
        f"pid {handle.pid} was stopped (Ctrl-Z or SIGSTOP): leave workers running"
        if stopped
        else "if its imports are that slow, raise FLASH_WORKER_START_TIMEOUT (seconds; 0 waits "
        "for ever); otherwise read its stderr above"
    )
    return _crash(
        f"a worker of endpoint {endpoint!r} ({_where(handle)}{state}) did not say it was ready "
        f"within {bound}; it was killed",
        None,
        handle.stderr_tail(),
        hint=f"{advice}; the next call starts a new worker",
    )


def process_stopped(pid: int | None) -> bool:
    """Whether local process ``pid`` is stopped (state T or t in /proc); False if unknown."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")


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
