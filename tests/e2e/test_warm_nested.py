"""A plain function making a nested call once warm: its call runs on the worker's reading thread
(workers/call_threads.py), and the nested call's reply is read by another thread meanwhile, with
one call at a time on the endpoint's one worker. A real script, real workers."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_python, write

SCRIPT = """
    import asyncio
    import threading

    from runpod_flash import CpuLiveServerless, remote


    @remote(CpuLiveServerless(name="warm-square"))
    def square(x: int) -> int:
        return x * x


    @remote(CpuLiveServerless(name="warm-outer"))
    def outer(x: int) -> list:
        # A plain function's own event loop for the nested call, as a user writes it.
        return [threading.current_thread().name, asyncio.run(square(x))]


    async def main() -> list:
        return [await outer(i) for i in range(4)]


    if __name__ == "__main__":
        import json

        print(json.dumps(asyncio.run(main())))
"""


def test_a_warm_plain_function_makes_nested_calls(
    tmp_path: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    script = write(tmp_path / "warm.py", SCRIPT)
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    done = run_python(script, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout.splitlines()[-1])
    assert [square for _, square in runs] == [0, 1, 4, 9]
    threads = [name for name, _ in runs]
    # The first call brings the function (the loop's thread pool runs it); then the thread that
    # read each call runs it.
    assert threads[0].startswith("openflash-call") and threads[1:] == ["openflash-reader"] * 3
