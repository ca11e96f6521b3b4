"""The per-endpoint pool: it owns worker lives, a backend spawns them, protocol.py frames bytes.

Scaling: ``workers_min`` workers start on first use; when every worker is busy (each takes up to
``max_concurrency`` calls) and the pool is below ``workers_max``, another starts; a worker idle
for ``idle_timeout`` seconds stops while the pool is above ``workers_min``.

Nothing waits forever: a call that runs past ``execution_timeout`` fails with
ExecutionTimeoutError and its worker is killed; a worker that dies fails its calls at once with
WorkerCrashedError (exit code or signal, last lines of stderr) and is replaced; a worker that
cannot start fails the calls waiting for it once no other worker is ready or starting.

A function on a worker may call another endpoint: relay.py passes such nested calls to the
runtime. A nested call that could never run (its pool is full of calls waiting on nested calls,
waits.py) fails at once with DeadlockError instead of waiting forever; the pool never grows past
``workers_max`` for it, since that limit may stand for GPUs the machine does not have.

A pool lives on one event loop; every method must be called from it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
from collections import deque
from collections.abc import Callable

from openflash._settings import shared_memory_min
from openflash.errors import ExecutionTimeoutError, FlashError
from openflash.workers import cancels, events, learning, pool_stats, protocol, shared_memory
from openflash.workers.call_frames import call_parts
from openflash.workers.calls import Call, Reply
from openflash.workers.crashes import died
from openflash.workers.handover import fail as _fail
from openflash.workers.handover import retire, stop
from openflash.workers.lifecycle import PoolConfig, Worker, WorkerLives, WorkerState
from openflash.workers.port import Backend, WorkerSpec, describe_exit
from openflash.workers.relay import NestedHandler, Relay
from openflash.workers.replies import ReplyTap, settle
from openflash.workers.waits import Waits, deadlock_error

__all__ = ["Pool", "PoolConfig"]

logger = logging.getLogger("openflash")


class Pool(WorkerLives):
    """One endpoint's calls on its workers: queued, sent to a worker with room, answered."""

    def __init__(
        self,
        config: PoolConfig,
        backend: Backend,
        spec: WorkerSpec,
        *,
        nested: NestedHandler | None = None,
        waits: Waits | None = None,
        on_imports: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        spec = dataclasses.replace(spec, max_concurrency=config.max_concurrency)
        #: Told (function, modules) what a worker imported during its first calls.
        self.on_imports = on_imports
        super().__init__(config, backend, spec)
        self.queue: deque[Call] = deque()
        self.instance_home: dict[str, Worker] = {}
        self._lost_instances: set[str] = set()
        self._call_ids = itertools.count(1)
        self._started = False
        self._stopped = False  # its workers stopped (close); ``closed`` comes first on retiring
        self.relay = Relay(config.name, nested)
        #: Frames to a local worker from this size go through shared memory (None: never).
        self.shared_memory_min = shared_memory_min()
        self.waits = waits
        if waits is not None:
            waits.add(self)
        #: Told (pool, worker, reply frame) when a reply will leave its worker idle with nothing
        #: queued: the runtime may lend the worker to the call's loop (runtime/lanes.py).
        self.lend: Callable[[Pool, Worker, protocol.Frame], None] | None = None

    # Calls.

    async def submit(self, call: Call) -> Reply:
        future = self.start(call)
        try:
            return await future
        except asyncio.CancelledError:
            cancels.cancelled(self, call)  # its caller gave up: stopped in its worker too
            raise
        finally:
            events.note(worker_pid=call.worker_pid, queue_wait=call.waited)

    def start(
        self, call: Call, future: Callable[[], asyncio.Future[Reply]] | None = None
    ) -> asyncio.Future[Reply]:
        """Queue ``call`` (sent at once when a worker has room) and return its future (made by
        ``future``, default the loop's); whoever cancels that future then calls
        ``cancels.cancelled`` (``submit`` does). Raises FlashError when the pool is shut down,
        DeadlockError for a nested call that could never run."""
        if self.closed:
            events.taken(events.call_handed_back.get())  # never queued here: its caller decides
            raise FlashError(
                f"endpoint {self.config.name!r} is shut down",
                hint="the openflash runtime is stopping; start a new process",
            )
        loop = asyncio.get_running_loop()
        made = call.future = loop.create_future() if future is None else future()
        call.pool = self
        call.queued_at = loop.time()
        call.on_taken = events.call_taken.get()
        call.on_handed_back = events.call_handed_back.get()
        if self._started and not self.queue:
            worker = self._choose(call)
            if worker is not None:  # the warm path: no queue, a worker with room takes it now
                self._send(worker, call)
                call.waited = 0.0
                return made
        self.queue.append(call)
        if not self._started:
            self._started = True
            self._ensure_min()
        self._dispatch()
        if call.parent is not None and not call.running and self._deadlocked():
            self.queue.remove(call)
            raise deadlock_error(self.config, call, self.running())
        return made

    # Nested calls and deadlocks (waits.py).

    def saturated(self) -> bool:
        live = self._live()
        return (
            len(live) >= self.config.workers_max
            and not any(w.state is WorkerState.STARTING for w in live)
            and not any(self._has_room(w) for w in live)
        )

    def running(self) -> list[Call]:
        return [c for w in self.workers for c in w.in_flight.values()]

    def has_queue(self) -> bool:
        return bool(self.queue)

    def _deadlocked(self) -> bool:
        return self.waits is not None and self.saturated() and self.waits.stuck(self)

    def warm(self) -> None:
        """Start the ``workers_min`` workers now, before the first call."""
        if not self._started and not self.closed:
            self._started = True
            self._ensure_min()

    def release_instance(self, instance_id: str) -> None:
        """Drop a class instance from the worker that holds it."""
        self._lost_instances.discard(instance_id)
        home = self.instance_home.pop(instance_id, None)
        if home is None or home.state is not WorkerState.READY or home.handle is None:
            return
        if home.lane is not None:
            home.lane.reclaim()
        home.loaded.discard(instance_id)
        home.handle.writer.write(protocol.encode(protocol.RELEASE, 0, instance_id.encode()))
        self._arm_idle(home)

    def stats(self) -> dict[str, object]:
        """Its workers and queue, as the dashboard and ``/health`` show them (pool_stats.py)."""
        return pool_stats.describe(self.workers, len(self.queue), self.lane_calls)

    # Dispatch.

    def _dispatch(self) -> None:
        if self.closed:
            return
        if not any(self._has_room(w) for w in self.workers) and not (
            self.queue and self._reclaim()  # a lent worker is taken back before scaling up
        ):
            self._scale_up()  # nobody can take a call now: no need to look at the queue
            return
        waiting: deque[Call] = deque()
        while self.queue:
            call = self.queue.popleft()
            assert call.future is not None
            if call.future.done():  # the caller gave up while it waited
                continue
            worker = self._choose(call)
            if worker is None:
                waiting.append(call)
            else:
                self._send(worker, call)
                call.waited = asyncio.get_running_loop().time() - call.queued_at
        self.queue = waiting
        self._scale_up()

    def _choose(self, call: Call) -> Worker | None:
        if call.op == protocol.OP_METHOD and call.target in self.instance_home:
            home = self.instance_home[call.target]
            if home.lane is not None:
                home.lane.reclaim()  # its instance lives there: taken back from its lane
            return home if self._has_room(home) else None
        # The first worker with room that holds the target, else the least busy one.
        best: Worker | None = None
        best_key = (True, 0)
        room = self.config.max_concurrency
        for worker in self.workers:
            if worker.state is not WorkerState.READY or len(worker.in_flight) >= room:
                continue  # no room (_has_room)
            if worker.lane is not None:
                continue  # lent to another loop (runtime/lanes.py)
            key = (call.target not in worker.loaded, len(worker.in_flight))
            if best is None or key < best_key:
                if key == (False, 0):
                    return worker
                best, best_key = worker, key
        return best

    def _send(self, worker: Worker, call: Call) -> None:
        assert worker.handle is not None
        call_id = next(self._call_ids)
        sent_blob = call.sent_blob = call.target not in worker.loaded
        parts = call_parts(call, call_id, sent_blob)
        writer = worker.handle.writer
        if len(parts) == 1 or not shared_memory.send(writer, parts, self.shared_memory_min):
            protocol.write_parts(writer, parts)
        call.running = True
        call.wire = (writer.write, call_id)
        call.worker_pid = worker.handle.pid
        worker.loaded.add(call.target)
        if call.op == protocol.OP_METHOD:
            self.instance_home[call.target] = worker
            if call.target in self._lost_instances:
                self._lost_instances.discard(call.target)
                logger.warning(
                    "openflash: endpoint %r: the instance behind %s was lost with its "
                    "worker; it is created again, with its constructor's state",
                    self.config.name,
                    call.label,
                )
        worker.in_flight[call_id] = call  # its idle timer, if it fires meanwhile, sees it busy
        if call.on_taken is not None:
            events.taken(call.on_taken)
        if self.config.execution_timeout:
            call.timer = asyncio.get_running_loop().call_later(
                self.config.execution_timeout, self._on_timeout, worker, call_id
            )

    # Scaling (lifecycle.py starts and stops the workers).

    def _scale_up(self) -> None:
        demand = sum(
            1
            for c in self.queue
            if not (c.op == protocol.OP_METHOD and c.target in self.instance_home)
        )
        self._grow(demand)

    def _none_started(self, error: BaseException) -> None:
        queued, self.queue = self.queue, deque()
        for call in queued:
            _fail(call, error)

    def _holds_instances(self, worker: Worker) -> bool:
        return worker in self.instance_home.values()

    # Replies, timeouts, deaths.

    async def _read(self, worker: Worker) -> None:
        assert worker.handle is not None
        tap = ReplyTap(worker.handle.reader, functools.partial(self._replied, worker))
        while True:
            frame = streaming = imported = None  # nothing kept while waiting (a reply's memory)
            try:
                frame = await tap.read()
            except protocol.FrameError as e:
                worker.doom = f"it sent what openflash cannot read as a frame ({e}); it was killed"
                break
            if frame is None:
                break
            if frame.kind in (protocol.NESTED, protocol.RELEASE):
                self.relay.receive(worker, frame, worker.in_flight, worker.handle.writer.write)
                continue
            if frame.kind in (protocol.ITEM, protocol.PROGRESS):
                streaming = worker.in_flight.get(frame.call_id)
                if streaming is not None and streaming.on_frame is not None:
                    streaming.on_frame(frame)
                continue
            if frame.kind == protocol.IMPORTED:
                imported = worker.in_flight.get(frame.call_id)
                if imported is not None and self.on_imports is not None:
                    function = imported.label.removesuffix("()")
                    self.on_imports(function, learning.decode(frame.payload))
                continue
            if frame.kind == protocol.RETIRE:
                worker.state = WorkerState.STOPPING  # no new calls; a replacement starts if needed
                worker.doom = "it ran out of memory under FLASH_WORKER_MAX_RSS"
                continue
            self._replied(worker, frame)
        await self._exited(worker)

    def _replied(self, worker: Worker, frame: protocol.Frame) -> None:
        frame = shared_memory.received(frame, worker.handle)  # a large result: mapped
        if self.lend is not None and len(worker.in_flight) == 1 and not self.queue:
            self.lend(self, worker, frame)  # before its caller hears of the reply
        if not settle(worker, frame, self.instance_home):
            return  # it timed out already
        if not worker.in_flight:
            self._arm_idle(worker)
        if self.queue:  # with none queued, dispatching would neither send nor start anything
            self._dispatch()

    def _on_timeout(self, worker: Worker, call_id: int) -> None:
        call = worker.in_flight.pop(call_id, None)
        if call is None or worker.handle is None:
            return
        limit = self.config.execution_timeout or 0
        _fail(
            call,
            ExecutionTimeoutError(
                f"{call.label} on endpoint {self.config.name!r} ran past its execution timeout "
                f"({limit:g} s, executionTimeoutMs={round(limit * 1000)}); its worker "
                f"(pid {worker.pid}) was killed"
            ),
        )
        worker.doom = f"killed because {call.label} ran past the execution timeout"
        worker.state = WorkerState.STOPPING  # no new calls; a replacement starts if needed
        worker.handle.kill()
        self._dispatch()

    async def _exited(self, worker: Worker) -> None:
        handle = worker.handle
        assert handle is not None
        was = WorkerState.READY if worker.ended_lent else worker.state
        worker.state = WorkerState.DEAD
        self.relay.forget(worker)
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
        if worker in self.workers:
            self.workers.remove(worker)
        for instance_id in [i for i, w in self.instance_home.items() if w is worker]:
            del self.instance_home[instance_id]
            self._lost_instances.add(instance_id)
        handle.kill()  # a worker that closed its socket without exiting
        code = await handle.wait()
        crashed = bool(worker.in_flight) or (
            was is WorkerState.READY
            and not self.closed
            and not getattr(handle, "expected_exit", False)
        )
        events.emit(
            "worker_exited",
            endpoint=self.config.name,
            pid=handle.pid,
            exit=describe_exit(code),
            crashed=crashed,
        )
        if worker.in_flight:
            labels = [c.label for c in worker.in_flight.values()]
            # A local worker killed over FLASH_WORKER_MAX_RSS (backends/memory_cap.py) says so.
            over: MemoryError | None = getattr(handle, "memory_error", None)
            error = over or died(self.config.name, handle, code, worker.doom, labels)
            calls, worker.in_flight = list(worker.in_flight.values()), {}
            for call in calls:
                _fail(call, error)
        elif (
            was is WorkerState.READY
            and not self.closed
            and not getattr(handle, "expected_exit", False)
        ):
            logger.warning(
                "openflash: a worker of endpoint %r (pid %s) exited with %s",
                self.config.name,
                handle.pid,
                describe_exit(code),
            )
        if not self.closed:
            self._ensure_min()
            self._dispatch()

    # Shutdown.

    def retire(self, retiring: set[Pool]) -> None:
        """Replaced by a reload: queued calls handed back, running ones finished, then workers
        stopped (workers/handover.py); the pool is in ``retiring`` until then."""
        retiring.add(self)
        self._reclaim()
        self._retired = asyncio.get_running_loop().create_task(retire(self))
        self._retired.add_done_callback(lambda _task: retiring.discard(self))

    async def close(self) -> None:
        """Stop every worker; calls still queued are handed back, calls running fail with a
        FlashError (workers/handover.py)."""
        if not self._stopped:
            self._stopped = True
            self._reclaim()
            await stop(self)
