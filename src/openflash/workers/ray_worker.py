"""A worker on a Ray cluster: a Ray actor running in the endpoint's environment.

The actor process is the environment's own interpreter (``py_executable``), with Ray and this
runtime importable behind the environment's packages (ray_shim.py puts them there), so the
user's pins win. It runs calls exactly as a local worker does (child.Executor); Ray carries the
frames instead of a socket.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from openflash.workers import pickling
from openflash.workers.child import Executor

__all__ = ["RayWorker"]


class RayWorker:
    def __init__(self, max_concurrency: int, cwd: str | None = None) -> None:
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        self.executor = Executor(max_concurrency)

    def ready(self) -> dict[str, Any]:
        import ray

        return {
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "node": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        }

    async def call(self, call_id: int, payload: bytes) -> bytes:
        return await self.executor.reply(call_id, payload)

    def caller(self, payload: bytes) -> None:
        """What the caller can import (a CALLER frame's payload)."""
        self.executor.caller_modules = pickling.accept_caller(payload)

    def release(self, instance_id: str) -> None:
        self.executor.release(instance_id)
