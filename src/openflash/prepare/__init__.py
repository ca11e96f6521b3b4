"""The one preparer (preparer.py) and the values it takes and gives (outcomes.py).

Specs or a flash.lock entry -> a lock -> an environment, a system layer and the worker runtime;
used by the runtime, Ray's node agent and every CLI command. ``dependency_checks`` holds the pure
rules of ``flash check``.
"""

from openflash.prepare.outcomes import BuildStatus, DependencyKey, NodeBuild, Prepared, SetCheck
from openflash.prepare.preparer import Preparer

__all__ = ["BuildStatus", "DependencyKey", "NodeBuild", "Prepared", "Preparer", "SetCheck"]
