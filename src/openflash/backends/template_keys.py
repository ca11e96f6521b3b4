"""What identifies a worker template (``TemplateKey``) and the ways a template refuses to fork
(``TemplateUnsafe``, ``LearnedUnsafe``, ``TemplateStuck``); the template itself is templates.py."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from openflash.backends.targets import LocalTarget
from openflash.workers.port import WorkerSpec

__all__ = ["LearnedUnsafe", "TemplateKey", "TemplateStuck", "TemplateUnsafe"]


@dataclass(frozen=True, slots=True)
class TemplateKey:
    """Which template forks a worker: what its process was started with and imported.

    Workers of equal keys fork from one template. Keys of one ``family`` differ only in the
    project's fingerprint: a template of the family with another fingerprint preloaded an older
    version of the project's files, and forks no more.
    """

    python: Path
    runtime_path: Path
    cwd: Path
    preload: tuple[str, ...]
    #: The template's variables (a worker's, less its GPUs), as sorted items.
    environ: tuple[tuple[str, str], ...]
    project_digest: str = ""
    #: The learned record it reads when it starts (its name holds the project's fingerprint).
    learned_preload: Path | None = None

    @classmethod
    def of(cls, spec: WorkerSpec, target: LocalTarget, environ: dict[str, str]) -> TemplateKey:
        """The key of ``spec``'s workers (``target`` its target), ``environ`` their variables."""
        return cls(
            target.python,
            target.runtime_path,
            spec.cwd,
            spec.preload,
            tuple(sorted(environ.items())),
            spec.project_digest,
            spec.learned_preload,
        )

    @property
    def family(self) -> TemplateKey:
        """The key less the project's fingerprint (and the learned record named after it)."""
        return replace(self, project_digest="", learned_preload=None)


class TemplateUnsafe(Exception):
    """The template cannot fork safely (or could not start): spawn workers instead."""


class LearnedUnsafe(TemplateUnsafe):
    """Only the learned imports made the template unsafe: start one without them."""


class TemplateStuck(Exception):
    """A started template that did not answer a fork request in time (stopped, or hung)."""
