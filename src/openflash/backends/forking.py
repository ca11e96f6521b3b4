"""The local backend's templates (backends/templates.py): which one forks a worker, starting
one beside an endpoint's first worker, retiring those of an older version of the project's
files and those idle past FLASH_TEMPLATE_IDLE_TIMEOUT, remembering those that cannot fork, and
replacing one that does not answer a fork request within ``FORK_ANSWER_S`` (stopped or hung:
that worker is spawned instead, so no caller waits on it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from openflash.backends.forked import ForkedProcess
from openflash.backends.templates import (
    LearnedUnsafe,
    Template,
    TemplateKey,
    TemplateStuck,
    TemplateUnsafe,
)
from openflash.workers.crashes import process_stopped
from openflash.workers.port import WorkerSpec

__all__ = ["Forking"]

logger = logging.getLogger("openflash")


class Forking:
    """The templates of one local backend, by key."""

    def __init__(self, registry: Path | None, idle_timeout: float | None) -> None:
        self._templates: dict[TemplateKey, Template] = {}
        #: Where running templates leave a note (``flash env ls``).
        self._registry = registry
        #: FLASH_TEMPLATE_IDLE_TIMEOUT: how long a template outlives its last worker.
        self.idle_timeout = idle_timeout
        #: Templates that cannot fork, and why (their workers are spawned).
        self._unsafe: dict[TemplateKey, str] = {}
        #: Templates idle or of older project versions, being stopped.
        self._retiring: set[asyncio.Future[None]] = set()

    async def fork(
        self, spec: WorkerSpec, key: TemplateKey, env: dict[str, str], sock: socket.socket
    ) -> ForkedProcess | None:
        """A worker of ``spec`` forked from ``key``'s template, with ``env`` and ``sock``; None
        when it must be spawned (the template is starting, or cannot fork)."""
        if key in self._unsafe:
            return None
        template = self._templates.get(key)
        if template is None:
            # A template that preloaded an older version of the project's files forks no more.
            for old in [k for k in self._templates if k.family == key.family]:
                self._retire(old, self._templates[old])
            # The endpoint's first worker is spawned while its template starts beside it: a
            # cold start costs what it did, and the workers after it are forked.
            self._new_template(key, spec, learned=True)
            return None
        try:
            return await template.fork(env, spec.max_concurrency, sock.fileno())
        except TemplateUnsafe as e:
            self._give_up(key, spec, e)
            return None
        except TemplateStuck as e:
            # Stopped (Ctrl-Z, SIGSTOP) or hung: killed and replaced, and this worker spawned.
            logger.warning(
                "openflash: endpoint %r: %s: it was killed and a new one started; this worker "
                "is started anew",
                spec.endpoint,
                e,
            )
            self._retire(key, template)
            self._new_template(key, spec, learned=True)
            return None

    def start_overdue(self, spec: WorkerSpec, key: TemplateKey) -> str | None:
        """A worker's start waited past its bound for ``key``'s template, still starting: it is
        killed and a new one started beside the next worker (spawned); what it was, or None."""
        template = self._templates.get(key)
        if template is None or not template.starting:
            return None
        state = ", stopped" if process_stopped(template.process_pid) else ""
        self._retire(key, template)  # the next worker is spawned, a new template beside it
        return (
            f"it waited for its worker template (pid {template.process_pid}{state}) to finish "
            "starting, which was killed (a new one starts beside the next worker)"
        )

    def _new_template(self, key: TemplateKey, spec: WorkerSpec, *, learned: bool) -> None:
        """Start ``key``'s template beside the worker being spawned; with ``learned``, it
        preloads what the endpoint's workers were seen importing too."""
        template = self._templates[key] = Template(
            key.python,
            dict(key.environ),
            spec.cwd,
            spec.preload,
            self._registry,
            learned=spec.learned_preload if learned else None,
            idle_timeout=self.idle_timeout,
            on_idle=lambda idle: self._retire(key, idle),
        )
        started = asyncio.ensure_future(template.ensure_started())
        started.add_done_callback(lambda done: self._started(key, spec, done))

    def _retire(self, key: TemplateKey, template: Template) -> None:
        """Stop ``template`` (idle, or of an older version of the project's files)."""
        if self._templates.get(key) is template:
            del self._templates[key]
        closing = asyncio.ensure_future(template.close())
        self._retiring.add(closing)
        closing.add_done_callback(self._retiring.discard)

    def _started(self, key: TemplateKey, spec: WorkerSpec, done: asyncio.Future[None]) -> None:
        error = None if done.cancelled() else done.exception()
        if isinstance(error, TemplateUnsafe):
            self._give_up(key, spec, error)

    def _give_up(self, key: TemplateKey, spec: WorkerSpec, error: TemplateUnsafe) -> None:
        self._templates.pop(key, None)
        if isinstance(error, LearnedUnsafe):  # what its workers imported: the code's imports only
            logger.debug(
                "openflash: endpoint %r: its template preloads only what its code imports: the "
                "modules its workers imported made it unsafe to fork: %s",
                spec.endpoint,
                error,
            )
            self._new_template(key, spec, learned=False)
            return
        self._unsafe[key] = str(error)
        logger.debug(
            "openflash: endpoint %r: workers are spawned, not forked: %s", spec.endpoint, error
        )

    def describe(self) -> list[dict[str, object]]:
        return [t.describe() for t in self._templates.values()]

    async def close(self) -> None:
        await asyncio.gather(*self._retiring, return_exceptions=True)
        templates, self._templates = list(self._templates.values()), {}
        await asyncio.gather(*(t.close() for t in templates), return_exceptions=True)
