"""Concurrent first calls to a new environment, from two processes: exactly one build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from openflash.envs.store import Store

from helpers import write


def test_twenty_first_calls_from_two_processes_build_once(fresh_home: Path, tmp_path: Path) -> None:
    script = write(
        tmp_path / "burst.py",
        """
        import asyncio, os
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="burst", workersMax=3), dependencies=["six==1.16.0", "idna"])
        async def which() -> str:
            import six
            return six.__version__

        async def main():
            results = await asyncio.gather(*(which() for _ in range(10)))
            print(",".join(results))

        asyncio.run(main())
    """,
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == ",".join(["1.16.0"] * 10)
    builds = [e for e in Store(fresh_home).events() if e["kind"] == "envs"]
    assert len(builds) == 1, builds
    assert list((fresh_home / "envs").iterdir()) == [fresh_home / "envs" / builds[0]["key"]]
