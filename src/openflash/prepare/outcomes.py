"""What the preparer is asked and what it hands back: plain, frozen values.

``DependencyKey`` names an endpoint's dependency sets; ``Prepared`` is a set made ready for
workers (or only resolved, for workers elsewhere); ``NodeBuild`` is what a Ray node built from a
lock; ``SetCheck`` is what ``flash check`` learns of a set without building it. ``BuildStatus``
is the one mutable record: a preparation's progress, for dashboards and terminals.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

from openflash.deps.dependency_key import DependencyKey
from openflash.deps.resolve import Lock
from openflash.deps.system import SystemLayer, SystemLock
from openflash.envs.environment import Environment
from openflash.envs.uv_options import NO_OPTIONS, UvOptions

__all__ = ["BuildStatus", "DependencyKey", "NodeBuild", "Prepared", "SetCheck"]


@dataclass
class BuildStatus:
    """How the preparation of one dependency set goes, for dashboards and terminals.

    ``state`` is one of pending, resolving, building, ready, failed; ``started`` and
    ``finished`` are epoch seconds; ``log`` keeps the last 300 lines the tools printed.
    """

    state: str = "pending"
    error: str | None = None
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=300))
    started: float = 0.0
    finished: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "error": self.error,
            "log": list(self.log),
            "started": self.started,
            "finished": self.finished,
        }


@dataclass(frozen=True)
class Prepared:
    """What workers of a dependency set need. Built here for local workers; for workers on
    other machines (Ray) only resolved here, and built there from ``lock`` and ``system_lock``."""

    lock: Lock
    env_key: str
    environment: Environment | None = None
    layer: SystemLayer = field(default_factory=SystemLayer)
    runtime_path: Path | None = None
    system_lock: SystemLock | None = None
    #: The install options the environment is built with (routed: deps/torch_variants.py),
    #: which machines elsewhere build it with too.
    options: UvOptions = NO_OPTIONS


@dataclass(frozen=True, slots=True)
class NodeBuild:
    """What one machine built from a lock resolved elsewhere (a Ray node's store).

    ``environment`` holds the lock's packages, ``layer`` the system lock's (empty without one),
    ``runtime_path`` the worker runtime's folder and ``overlay`` the extra lock's environment
    (Ray's own packages, put behind the user's), or None when none was asked for.
    """

    environment: Environment
    layer: SystemLayer
    runtime_path: Path
    overlay: Environment | None = None


@dataclass(frozen=True, slots=True)
class SetCheck:
    """What ``flash check`` learns of one dependency set: it resolves (``lock``), its system
    packages resolve too, and ``no_wheels`` names (canonical) the locked packages that have no
    wheel for this interpreter and platform; ``torch_variant`` and ``torch_download`` say which
    torch build it holds and its size."""

    lock: Lock
    no_wheels: tuple[str, ...] = ()
    #: The torch build the lock holds (``cpu``, ``cu121``, ``default``: PyPI's), None without
    #: torch (deps/torch_variants.py's ``locked_variant``).
    torch_variant: str | None = None
    #: What that build downloads here (the torch family and its ``nvidia-*`` packages), in
    #: bytes; None when unknown.
    torch_download: int | None = None
    #: The top-level modules the set provides (deps/imports.py's ``modules_provided``).
    provided: frozenset[str] = frozenset()
    #: The locked packages (canonical) whose modules were read neither from the installed set,
    #: uv's cache nor their wheel (deps/package_modules.py): only their names say what they give.
    unverified: tuple[str, ...] = ()
