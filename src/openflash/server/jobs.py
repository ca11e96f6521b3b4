"""Async jobs (``/run``), journaled in SQLite so that none vanishes.

Every job is written before it is acknowledged, and every change of state is written as it
happens. A job is IN_QUEUE until a worker takes its call, then IN_PROGRESS: its start is counted
then. When the server starts it reads the journal back: finished jobs keep their output, a job
left queued is queued again, and one the previous server left running is run again once; if it
was started twice it is marked FAILED with the reason. A stop (``stopping``, then ``close``) fails
no job: one its pool gives back untaken stays IN_QUEUE with no start counted, one that was running
is queued again with its start counted. A job whose pool a reload replaced is given back untaken
(workers/handover.py) and sent again through its route as it is now, to the new pool. A result
that cannot be journaled (a full disk) fails the job with the reason. Where even that failure
cannot be journaled (the disk full to its last block), the job's end is held in memory: ``get``
(and so ``status``) answers from there, the server says so, and the failure is written once the
journal has room (tried every ``HELD_RETRY_S``), never run again meanwhile; only a server stopped
before that leaves the job unfinished in the journal, for the next server to run again once.
``status`` answers from the journal otherwise; ``/retry`` makes an ended job a new run (its
starts counted afresh).

A job may name a webhook (server/webhooks.py): when it ends, its status body is POSTed there, in
a task of its own; a delivery the server could not finish before it stopped is made by the next.
Finished jobs are removed ``FLASH_JOB_TTL`` after their end (server/retention.py), leaving a
tombstone. ``attempt`` is the number of the job's call under its endpoint's ``retries`` (1, then
2, ...: api/retries.py); ``attempts`` counts the starts of the job across server restarts.

Status names are Runpod's: IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT. A job
starts (IN_PROGRESS, one more of its ``attempts``) when a worker takes its call
(``events.call_taken``): IN_QUEUE until then, as on Runpod.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from openflash import _settings
from openflash.api.retries import attempt_sink
from openflash.server import results, retention, webhooks
from openflash.server.job_journal import FINAL, MAX_ATTEMPTS, Job, JobJournal
from openflash.workers import events

__all__ = ["FINAL", "HELD_RETRY_S", "MAX_ATTEMPTS", "Invoker", "Job", "JobJournal", "JobRunner"]

#: How often the ends of jobs that could not be journaled are tried again.
HELD_RETRY_S = 2.0


#: How many times one job's call is sent again after a pool gave it back (reloads in a row).
MAX_HANDOVERS = 20

#: Runs a job's input on its route; returns (status, output, error).
Invoker = Callable[[dict[str, Any]], Awaitable[tuple[str, Any, str | None]]]


class JobRunner:
    """Runs journaled jobs as tasks on the server's event loop; delivers their webhooks and
    removes them once expired."""

    def __init__(
        self,
        journal: JobJournal,
        resolve: Callable[[str], Invoker | None],
        *,
        ttl: float | None = None,
        max_result: int | None = -1,  # -1: FLASH_MAX_RESULT_BYTES
        webhook_policy: webhooks.WebhookPolicy | None = None,
        say: Callable[[str, str], None] | None = None,
    ) -> None:
        self.journal = journal
        self.resolve = resolve
        self.ttl = retention.job_ttl() if ttl is None else ttl
        #: FLASH_MAX_RESULT_BYTES (None: no cap), which the routes' invokers apply
        self.max_result = _settings.max_result_bytes() if max_result == -1 else max_result
        self.webhook_policy = webhook_policy or webhooks.WebhookPolicy.from_env()
        self.say = say or (lambda message, level: None)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.deliveries: set[asyncio.Task[None]] = set()
        self.sweeper: asyncio.Task[None] | None = None
        self.closing = False
        #: Jobs whose failure could not be journaled (a full disk): its reason, by job id.
        self.held: dict[str, str] = {}
        self.flusher: asyncio.Task[None] | None = None

    def get(self, job_id: str, *, load: bool = True) -> Job | None:
        """The job as the journal has it (``load``: as ``JobJournal.get``), or FAILED with its
        reason while that is held."""
        job = self.journal.get(job_id, load=load)
        reason = self.held.get(job_id)
        if job is None or reason is None:
            return job
        return dataclasses.replace(job, status="FAILED", error=reason)

    def submit(self, route: str, payload: dict[str, Any], webhook: str | None = None) -> Job:
        job = self.journal.add(route, payload, webhook)
        self._start(job)
        return job

    def recover(self) -> list[Job]:
        """Start again what a previous server left unfinished (once); fail what failed twice;
        deliver the webhooks it left undelivered; start removing expired jobs."""
        recovered = []
        for job in self.journal.unfinished():
            if job.attempts >= MAX_ATTEMPTS:
                self.journal.finish(
                    job.id,
                    "FAILED",
                    error=(
                        f"the server stopped while this job was running, {job.attempts} times; "
                        "it is not started again"
                    ),
                )
            elif self.resolve(job.route) is None:
                self.journal.finish(
                    job.id,
                    "FAILED",
                    error=(f"the server restarted and no longer serves {job.route}"),
                )
            else:
                self.journal.requeue(job.id)
                self._start(job)
                recovered.append(job)
        for job in self.journal.pending_webhooks():
            self._deliver(job)
        if self.ttl > 0 and self.sweeper is None:
            self.sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return recovered

    def retry(self, job_id: str) -> Job | None:
        """A FAILED, TIMED_OUT or CANCELLED job run again under its id (Runpod's /retry)."""
        job = self.journal.get(job_id, load=False)  # a large output stays in its file
        if job is None or job.status not in FINAL - {"COMPLETED"}:
            return job
        self.journal.requeue(job_id, reopen=True)  # a new run: its attempts start again
        self._start(again := self.journal.get(job_id) or job)
        return again

    def cancel(self, job_id: str) -> Job | None:
        task = self.tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
            self.journal.finish(job_id, "CANCELLED", error="cancelled by request")
        return self.journal.get(job_id, load=False)

    def expired(self, job_id: str, route: str, base: str) -> dict[str, Any] | None:
        """The 404 body for ``job_id`` if it was a job of ``route`` removed as expired."""
        tomb = self.journal.tombstone(job_id)
        if tomb is None or tomb[0] != route:
            return None
        body: dict[str, Any] = retention.expired_body(job_id, base, tomb[1], tomb[2], self.ttl)
        return body

    def sweep(self) -> list[str]:
        """Remove the jobs that ended more than ``ttl`` ago (none when ``ttl`` is 0)."""
        return self.journal.expire(time.time() - self.ttl) if self.ttl > 0 else []

    async def _sweep(self) -> None:
        while True:
            self.sweep()
            await asyncio.sleep(retention.sweep_interval(self.ttl))

    def _start(self, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job))
        self.tasks[job.id] = task

        def ended(_task: asyncio.Task[None]) -> None:
            self.tasks.pop(job.id, None)
            final = self.journal.get(job.id, load=False)
            if not self.closing and final is not None and final.status in FINAL:
                self._deliver(final)

        task.add_done_callback(ended)

    def _deliver(self, job: Job) -> None:
        if not job.webhook or job.webhook_state != "pending":
            return
        url = job.webhook
        if isinstance(job.output, results.Stored):  # a large output, read for its webhook
            job = self.journal.get(job.id) or job
        payload = job.to_response()

        async def delivery() -> None:
            ok = await webhooks.deliver(url, payload, self.webhook_policy, self.say)
            self.journal.webhook_ended(job.id, "delivered" if ok else "failed")

        task = asyncio.get_running_loop().create_task(delivery())
        self.deliveries.add(task)
        task.add_done_callback(self.deliveries.discard)

    async def _run(self, job: Job) -> None:
        taken = handed_back = False

        def take() -> None:  # IN_PROGRESS, and an attempt, once a worker takes the job's call
            nonlocal taken
            if not taken:
                taken = True
                self.journal.started(job.id)

        def hand_back() -> None:  # its pool gave the call back untaken (workers/handover.py)
            nonlocal handed_back
            handed_back = True

        if events.call_note.get() is None:  # a resumed job: no request's note names it
            events.call_note.set({"id": job.id})
        events.call_taken.set(take)
        events.call_handed_back.set(hand_back)
        attempt_sink.set(lambda number: self.journal.attempt(job.id, number))
        for _handover in range(MAX_HANDOVERS + 1):
            invoker = self.resolve(job.route)  # after a reload: the new route, its new pool
            if invoker is None:
                self.journal.finish(job.id, "FAILED", error=f"no route {job.route} is served")
                return
            handed_back = False
            try:
                status, output, error = await invoker(job.input)
            except asyncio.CancelledError:
                if self.closing:  # the server is stopping: the next one runs it again
                    self.journal.requeue(job.id)
                else:
                    self.journal.finish(job.id, "CANCELLED", error="cancelled")
                raise
            except Exception as e:  # a job records its failure, never loses it
                status, output, error = "FAILED", None, f"{type(e).__name__}: {e}"
            if self.closing and status != "COMPLETED":
                # Stopped under it: queued, it stays IN_QUEUE with no attempt counted; running,
                # the next server runs it again (its attempt counted: MAX_ATTEMPTS).
                self.journal.requeue(job.id)
                return
            if not handed_back:
                break  # else sent again, to the pool that replaced the one that gave it back
        self._end(job, status, output, error)

    def _end(self, job: Job, status: str, output: Any, error: str | None) -> None:
        """Journal the job's end; where its result cannot be (a full disk), fail it with the
        reason, so that it is never run again."""
        try:
            self.journal.finish(job.id, status, output=output, error=error)
            return
        except Exception as e:  # sqlite3's "database or disk is full", an unwritable value
            reason = (
                f"the job ended ({status}) but its result could not be journaled in "
                f"{self.journal.path} ({type(e).__name__}: {e}); it is not run again"
            )
        self.say(f"job {job.id} on {job.route}: {reason}", "error")
        try:
            self.journal.finish(job.id, "FAILED", error=reason)
        except Exception as e:  # the disk is full to its last block: held here meanwhile
            self.held[job.id] = reason
            self.say(
                f"job {job.id} on {job.route}: its failure could not be journaled either "
                f"({type(e).__name__}: {e}); it is held in memory (its status answers FAILED) "
                f"and written once {self.journal.path} has room (tried every {HELD_RETRY_S:g} "
                "s); if this server stops before then, the next one runs it again once",
                "error",
            )
            if self.flusher is None or self.flusher.done():
                self.flusher = asyncio.get_running_loop().create_task(self._flush_held())

    async def _flush_held(self) -> None:
        while self.held:
            await asyncio.sleep(HELD_RETRY_S)
            self.flush_held()

    def flush_held(self) -> list[str]:
        """Journal the held failures the disk now has room for; the ids written."""
        written = []
        for job_id, reason in list(self.held.items()):
            try:
                self.journal.finish(job_id, "FAILED", error=reason)
            except Exception:
                break  # still full: tried again later
            del self.held[job_id]
            written.append(job_id)
            self.say(f"job {job_id}: its failure is journaled now", "info")
            final = self.journal.get(job_id)
            if final is not None and not self.closing:
                self._deliver(final)
        return written

    def stopping(self) -> None:
        """The server is stopping (a Ctrl-C or SIGTERM, before its pools close): from now on a
        job that does not complete is left for the next server, not failed."""
        self.closing = True

    async def close(self) -> None:
        self.closing = True
        self.flush_held()
        for job_id in self.held:
            self.say(
                f"job {job_id}: stopping with its failure not journaled ({self.journal.path} "
                "is full); the next server runs it again once",
                "error",
            )
        pending = [*self.tasks.values(), *self.deliveries]
        if self.flusher is not None:
            pending.append(self.flusher)
        if self.sweeper is not None:
            pending.append(self.sweeper)
        for task in pending:  # a delivery cut short stays pending: the next server makes it
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        left = len(self.journal.unfinished())
        if left:
            self.say(f"{left} unfinished job(s) left IN_QUEUE for the next server", "warning")
