"""A pool's workers through their lives: started by the backend, ready, idle, stopped.

``WorkerLives`` holds the workers of one endpoint and decides when one starts and stops: the
``workers_min`` at once, more for the calls waiting (``_grow``, up to ``workers_max``), an idle one
after ``idle_timeout`` while more than ``workers_min`` live. Calls are the pool's (pool.py): it
tells this class what to do once a worker is ready (``_dispatch``, ``_read``) and learns when no
worker could start (``_none_started``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

from openflash.errors import FlashError, WorkerCrashedError
from openflash.workers import events, pickling, portable, protocol
from openflash.workers.calls import Call
from openflash.workers.crashes import died_starting, process_stopped, started_late
from openflash.workers.port import Backend, WorkerHandle, WorkerSpec

__all__ = ["STOP_GRACE_S", "PoolConfig", "Worker", "WorkerLives", "WorkerState"]

#: How long a worker asked to exit has before it is killed.
STOP_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How a pool of one endpoint scales and how long its workers may take."""

    name: str
    workers_min: int = 0
    workers_max: int = 1
    idle_timeout: float = 60.0
    execution_timeout: float | None = None
    max_concurrency: int = 1
    start_timeout: float = 120.0


class WorkerState(enum.Enum):
    """STARTING -> READY -> STOPPING -> DEAD (any state may end DEAD)."""

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    DEAD = "dead"


@dataclass(eq=False)
class Worker:
    """One worker of a pool: its handle, the calls it runs (by call id), the functions and
    instances it holds, its idle timer, and why the pool stopped it (``doom``)."""

    number: int
    state: WorkerState = WorkerState.STARTING
    handle: WorkerHandle | None = None
    in_flight: dict[int, Call] = field(default_factory=dict)
    loaded: set[str] = field(default_factory=set)
    idle_timer: asyncio.TimerHandle | None = None
    #: When it last became idle (loop time).
    idle_since: float = 0.0
    doom: str = ""
    task: asyncio.Future[None] | None = None
    #: While lent to another event loop (runtime/lanes.py): that lane (``reclaim()`` takes it
    #: back at once); no other call is sent to it meanwhile.
    lane: Any = None
    #: Its end seen as it was taken back from a lane (it exited on its own, while READY): no
    #: call is sent to it (STOPPING), and its exit is told as a ready worker's (Pool._exited).
    ended_lent: bool = False

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle else None


class WorkerLives:
    """The workers of one pool and their lives (every method on the pool's event loop)."""

    def __init__(self, config: PoolConfig, backend: Backend, spec: WorkerSpec) -> None:
        self.config = config
        self.backend = backend
        self.spec = spec
        self.workers: list[Worker] = []
        self.closed = False
        self._numbers = itertools.count(1)
        self.lane_calls = 0  # the calls its workers ran while lent, counted once back

    # What the pool does with ready workers and calls.

    def _dispatch(self) -> None:
        """Give waiting calls to workers with room (and grow the pool for the rest)."""
        raise NotImplementedError

    async def _read(self, worker: Worker) -> None:
        """Take ``worker``'s frames until it exits."""
        raise NotImplementedError

    def _none_started(self, error: BaseException) -> None:
        """No worker lives and one failed to start with ``error``: fail the waiting calls."""
        raise NotImplementedError

    def _holds_instances(self, worker: Worker) -> bool:
        """Whether ``worker`` holds class instances still in use (it is not reaped then)."""
        raise NotImplementedError

    def _has_room(self, worker: Worker) -> bool:
        return (
            worker.state is WorkerState.READY
            and len(worker.in_flight) < self.config.max_concurrency
            and worker.lane is None
        )

    def _reclaim(self) -> bool:
        """Take back every lent worker (runtime/lanes.py); whether there was one."""
        lent = [w for w in self.workers if w.lane is not None]
        for worker in lent:
            worker.lane.reclaim()
        return bool(lent)

    def _live(self) -> list[Worker]:
        return [w for w in self.workers if w.state in (WorkerState.STARTING, WorkerState.READY)]

    def _grow(self, demand: int) -> None:
        """Start workers until those starting can take ``demand`` calls, up to workers_max."""
        coming = (
            sum(w.state is WorkerState.STARTING for w in self.workers) * self.config.max_concurrency
        )
        while demand > coming and len(self._live()) < self.config.workers_max:
            self._spawn()
            coming += self.config.max_concurrency

    def _ensure_min(self) -> None:
        while not self.closed and len(self._live()) < self.config.workers_min:
            self._spawn()

    def _spawn(self) -> None:
        worker = Worker(next(self._numbers))
        self.workers.append(worker)
        worker.task = asyncio.ensure_future(self._start(worker))

    async def _start(self, worker: Worker) -> None:
        """Start ``worker``: asked of the backend (spawned or forked) and ready, within
        ``start_timeout`` in all (0: no bound); past it the worker is killed and its calls fail
        with WorkerCrashedError naming the endpoint and its pid (crashes.started_late). A
        backend whose workers build their own environment (Ray: the node builds it as the
        worker starts) is bounded from its worker's start to READY only."""
        bound = self.config.start_timeout or None
        try:
            if self.backend.builds_locally:
                frame = await asyncio.wait_for(self._ask(worker), bound)
            else:
                worker.handle = await self.backend.start_worker(self.spec)
                frame = await asyncio.wait_for(protocol.read_frame(worker.handle.reader), bound)
        except FlashError as e:
            self._start_failed(worker, e)
            return
        except asyncio.TimeoutError:
            self._start_failed(worker, await self._start_late(worker))
            return
        except (OSError, protocol.FrameError):  # its stream closed, or corrupt at once
            frame = None
        if frame is None or frame.kind != protocol.READY:
            self._start_failed(worker, await self._start_crash(worker))
            return
        if self.closed or worker.state is not WorkerState.STARTING:
            self._stop(worker)
            return
        worker.state = WorkerState.READY
        handle = worker.handle
        assert handle is not None
        events.emit("worker_started", endpoint=self.config.name, pid=handle.pid, node=handle.node)
        handle.writer.write(protocol.encode(protocol.CALLER, 0, _caller_payload()))
        worker.task = asyncio.ensure_future(self._read(worker))
        self._arm_idle(worker)
        self._dispatch()

    async def _start_crash(self, worker: Worker) -> WorkerCrashedError:
        handle = worker.handle
        if handle is None:
            return WorkerCrashedError(f"endpoint {self.config.name!r}: worker did not start")
        handle.kill()
        return died_starting(self.config.name, handle, await handle.wait())

    async def _ask(self, worker: Worker) -> protocol.Frame | None:
        """A worker from the backend, and its first frame (READY, or None if it exits)."""
        worker.handle = await self.backend.start_worker(self.spec)
        return await protocol.read_frame(worker.handle.reader)

    async def _start_late(self, worker: Worker) -> WorkerCrashedError:
        handle = worker.handle
        local = handle is not None and getattr(handle, "node", "local") == "local"
        stopped = local and process_stopped(handle.pid if handle else None)
        if handle is not None:
            handle.kill()  # SIGKILL ends a stopped process too
            await handle.wait()
        overdue = getattr(self.backend, "start_overdue", None)
        waited = overdue(self.spec) if handle is None and overdue is not None else None
        return started_late(self.config.name, handle, self.config.start_timeout, stopped, waited)

    def _start_failed(self, worker: Worker, error: BaseException) -> None:
        worker.state = WorkerState.DEAD
        if worker in self.workers:
            self.workers.remove(worker)
        if any(w.state is WorkerState.READY for w in self.workers):
            self._dispatch()
            return
        if any(w.state is WorkerState.STARTING for w in self.workers):
            return  # the waiting calls wait for that start (its failure fails them), no other
        # None is ready nor starting: the waiting calls fail now (another start for them could
        # fail in turn, and they would wait for ever).
        self._none_started(error)

    def _arm_idle(self, worker: Worker) -> None:
        """Note that ``worker`` is idle from now; one timer per worker, armed once and moved on
        when it fires early (not a new timer for every call)."""
        if worker.in_flight or worker.state is not WorkerState.READY:
            return
        loop = asyncio.get_running_loop()
        worker.idle_since = loop.time()
        if worker.idle_timer is None:
            worker.idle_timer = loop.call_later(self.config.idle_timeout, self._reap_idle, worker)

    def _reap_idle(self, worker: Worker) -> None:
        if worker.lane is not None:  # lent: back here, idle since its last call (lanes.py)
            worker.lane.reclaim()
        worker.idle_timer = None
        if worker.in_flight or worker.state is not WorkerState.READY:
            return  # busy: armed again when its last call ends
        left = worker.idle_since + self.config.idle_timeout - asyncio.get_running_loop().time()
        if left > 0:  # it worked since the timer was armed
            worker.idle_timer = asyncio.get_running_loop().call_later(left, self._reap_idle, worker)
            return
        if len(self._live()) <= self.config.workers_min:
            return
        if self._holds_instances(worker):
            return  # it holds instances still in use; release_instance re-arms the timer
        self._stop(worker)

    def _stop(self, worker: Worker, why: str = "") -> None:
        """Ask a worker to exit; kill it if it has not after a grace period."""
        if worker.state is WorkerState.DEAD:
            return
        if worker.lane is not None:
            worker.lane.reclaim()  # nothing is written beside the lane's frames
        worker.state = WorkerState.STOPPING
        worker.doom = worker.doom or why
        handle = worker.handle
        if handle is None:
            return
        with contextlib.suppress(Exception):
            handle.writer.write(protocol.encode(protocol.SHUTDOWN))
        asyncio.get_running_loop().call_later(STOP_GRACE_S, handle.kill)


@functools.cache
def _importable() -> frozenset[str]:
    return portable.importable_modules()


def _caller_payload() -> bytes:
    """What this process can import (found once) and its portable rules: a CALLER payload."""
    return pickling.caller_payload(_importable())
