"""The pool with real worker processes (the local backend) in a bare environment."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from openflash.backends.local import LocalBackend
from openflash.backends.targets import LocalTarget
from openflash.errors import ExecutionTimeoutError, FlashError, WorkerCrashedError
from openflash.workers import events, protocol
from openflash.workers.calls import Call
from openflash.workers.pool import Pool, PoolConfig
from openflash.workers.port import WorkerSpec

# The worker cannot import this module: send its functions by value, as the API layer does.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fn_call(fn: Callable[..., Any], *args: Any) -> Call:
    blob = cloudpickle.dumps(fn)
    return Call(
        protocol.OP_FUNCTION,
        str(hash(blob)),
        blob,
        cloudpickle.dumps((args, {})),
        label=f"{fn.__name__}()",
        source=__file__,
    )


async def result(pool: Pool, call: Call) -> Any:
    reply = await pool.submit(call)
    if not reply.ok:
        raise AssertionError(protocol.decode_error(reply.payload)["traceback"])
    return pickle.loads(reply.payload)


def run(spec: WorkerSpec, config: PoolConfig, body: Callable[[Pool], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        pool = Pool(config, LocalBackend(), spec)
        try:
            return await asyncio.wait_for(body(pool), 60)
        finally:
            await pool.close()

    return asyncio.run(main())


async def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def getpid() -> int:
    return os.getpid()


async def sleepy_pid(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()


def test_a_call_runs_in_a_worker_of_the_environment(bare_spec: WorkerSpec) -> None:
    def where() -> tuple[int, str]:
        return os.getpid(), sys.prefix

    pid, prefix = run(bare_spec, PoolConfig("p"), lambda pool: result(pool, fn_call(where)))
    assert pid != os.getpid()
    assert prefix == str(bare_spec.target.python.parent.parent)


def test_grows_to_workers_max_under_load_and_no_further(bare_spec: WorkerSpec) -> None:
    async def body(pool: Pool) -> tuple[set[int], dict[str, Any]]:
        calls = [result(pool, fn_call(sleepy_pid, 0.5)) for _ in range(9)]
        pids = set(await asyncio.gather(*calls))
        return pids, pool.stats()

    pids, stats = run(bare_spec, PoolConfig("p", workers_max=3), body)
    assert len(pids) == 3
    assert stats["workers"] == 3


def test_workers_min_start_on_first_use(bare_spec: WorkerSpec) -> None:
    async def body(pool: Pool) -> None:
        assert pool.stats()["workers"] == 0
        await result(pool, fn_call(getpid))
        await wait_until(lambda: pool.stats()["ready"] == 2)

    run(bare_spec, PoolConfig("p", workers_min=2, workers_max=3), body)


def test_idle_workers_stop_after_idle_timeout_down_to_min(bare_spec: WorkerSpec) -> None:
    async def body(pool: Pool) -> None:
        await asyncio.gather(*(result(pool, fn_call(sleepy_pid, 0.3)) for _ in range(3)))
        assert pool.stats()["workers"] == 3
        await wait_until(lambda: pool.stats()["workers"] == 1)
        await asyncio.sleep(1.5)  # the last one stays: it is the minimum
        assert pool.stats()["workers"] == 1

    run(bare_spec, PoolConfig("p", workers_min=1, workers_max=3, idle_timeout=1), body)


def test_a_worker_in_use_past_its_idle_timeout_stays_and_stops_once_idle(
    bare_spec: WorkerSpec,
) -> None:
    async def body(pool: Pool) -> None:
        first = await result(pool, fn_call(sleepy_pid, 0))
        # Calls one after another keep it in use well past its idle timeout (1 s): its idle
        # timer fires meanwhile (busy, or idle for a moment between calls) and must spare it.
        pids = {await result(pool, fn_call(sleepy_pid, 0.15)) for _ in range(14)}
        assert pids == {first}
        await wait_until(lambda: pool.stats()["workers"] == 0)  # idle at last: stopped

    run(bare_spec, PoolConfig("p", workers_min=0, workers_max=1, idle_timeout=1), body)


def test_max_concurrency_runs_calls_together_in_one_worker(bare_spec: WorkerSpec) -> None:
    async def rendezvous(n: int) -> int:
        # Every call waits until n calls are inside this worker at once.
        import builtins

        builtins.arrived = getattr(builtins, "arrived", 0) + 1
        while builtins.arrived < n:
            await asyncio.sleep(0.01)
        return os.getpid()

    def sync_rendezvous(n: int) -> int:
        import builtins
        import threading

        if not hasattr(builtins, "barrier"):
            builtins.barrier = threading.Barrier(n)
        builtins.barrier.wait(timeout=20)
        return os.getpid()

    async def body(pool: Pool) -> tuple[set[int], set[int]]:
        a = set(await asyncio.gather(*(result(pool, fn_call(rendezvous, 4)) for _ in range(4))))
        b = set(
            await asyncio.gather(*(result(pool, fn_call(sync_rendezvous, 4)) for _ in range(4)))
        )
        return a, b

    a, b = run(bare_spec, PoolConfig("p", workers_max=1, max_concurrency=4), body)
    assert len(a) == 1 and a == b


def test_a_dying_worker_fails_its_call_at_once_and_is_replaced(bare_spec: WorkerSpec) -> None:
    def die(code: int) -> None:
        print("about to exit", file=sys.stderr, flush=True)
        os._exit(code)

    def kill_self() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    async def body(pool: Pool) -> None:
        first = await result(pool, fn_call(getpid))
        started = time.monotonic()
        with pytest.raises(WorkerCrashedError) as info:
            await result(pool, fn_call(die, 3))
        assert time.monotonic() - started < 1.0
        assert info.value.exit_code == 3 and info.value.signal is None
        assert "about to exit" in info.value.stderr_tail
        assert "exit code 3" in str(info.value)
        with pytest.raises(WorkerCrashedError) as info:
            await result(pool, fn_call(kill_self))
        assert info.value.signal == signal.SIGKILL
        assert "signal 9 (SIGKILL)" in str(info.value)
        after = await result(pool, fn_call(getpid))
        assert after != first

    run(bare_spec, PoolConfig("p"), body)


def test_a_call_past_its_timeout_fails_and_the_worker_is_killed(bare_spec: WorkerSpec) -> None:
    async def body(pool: Pool) -> None:
        hung = await result(pool, fn_call(getpid))
        started = time.monotonic()
        with pytest.raises(ExecutionTimeoutError, match="ran past its execution timeout") as info:
            await result(pool, fn_call(sleepy_pid, 30))
        assert time.monotonic() - started < 2.0
        assert isinstance(info.value, TimeoutError)
        await wait_until(lambda: _gone(hung))
        assert await result(pool, fn_call(getpid)) != hung

    run(bare_spec, PoolConfig("p", execution_timeout=0.5), body)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_worker_that_cannot_start_fails_the_waiting_calls(
    bare_spec: WorkerSpec, tmp_path: Path
) -> None:
    broken = WorkerSpec(
        endpoint="broken", target=LocalTarget(bare_spec.target.python, tmp_path), cwd=tmp_path
    )

    async def body(pool: Pool) -> None:
        with pytest.raises(WorkerCrashedError, match="exited before it was ready") as info:
            await result(pool, fn_call(getpid))
        assert "No module named 'openflash'" in info.value.stderr_tail

    run(broken, PoolConfig("broken"), body)

    missing = WorkerSpec(
        endpoint="gone", target=LocalTarget(tmp_path / "no-python", tmp_path), cwd=tmp_path
    )

    async def body2(pool: Pool) -> None:
        with pytest.raises(FlashError, match="cannot start a worker for endpoint 'gone'"):
            await result(pool, fn_call(getpid))

    run(missing, PoolConfig("gone"), body2)


def test_user_errors_come_back_as_error_replies(bare_spec: WorkerSpec) -> None:
    def fail() -> None:
        raise KeyError("missing")

    async def body(pool: Pool) -> dict[str, Any]:
        reply = await pool.submit(fn_call(fail))
        assert not reply.ok
        return protocol.decode_error(reply.payload)

    info = run(bare_spec, PoolConfig("p"), body)
    assert info["type"] == "KeyError"
    assert f'File "{__file__}"' in info["traceback"]  # the real file, not <dynamic-code>
    assert 'raise KeyError("missing")' in info["traceback"]
    assert "concurrent/futures" not in info["traceback"]
    assert isinstance(pickle.loads(info["exception"]), KeyError)


def test_closing_fails_queued_and_running_calls(bare_spec: WorkerSpec) -> None:
    async def body(pool: Pool) -> None:
        running = asyncio.ensure_future(result(pool, fn_call(sleepy_pid, 30)))
        queued = asyncio.ensure_future(result(pool, fn_call(sleepy_pid, 30)))
        await wait_until(lambda: pool.stats()["busy"] == 1)
        await pool.close()
        for task in (running, queued):
            with pytest.raises(FlashError, match="was shut down"):
                await task

    run(bare_spec, PoolConfig("p"), body)


def test_a_retired_pool_hands_back_queued_calls_and_finishes_running_ones(
    bare_spec: WorkerSpec,
) -> None:
    """A reload replaced the pool (workers/handover.py): what no worker took goes back to its
    caller (its hook, then an error saying so); what runs finishes, then the workers stop."""

    async def body(pool: Pool) -> None:
        handed: list[str] = []
        running = asyncio.ensure_future(result(pool, fn_call(sleepy_pid, 1)))
        await wait_until(lambda: pool.stats()["busy"] == 1)
        token = events.call_handed_back.set(lambda: handed.append("queued"))
        queued = asyncio.ensure_future(result(pool, fn_call(sleepy_pid, 30)))
        events.call_handed_back.reset(token)
        await wait_until(lambda: pool.stats()["queued"] == 1)
        worker = pool.stats()["pids"]
        retiring: set[Pool] = set()
        pool.retire(retiring)
        with pytest.raises(FlashError, match="replaced by a reload before a worker took"):
            await queued
        assert handed == ["queued"] and retiring == {pool}
        assert [await running] == worker  # finished on the worker that had it
        await wait_until(lambda: not retiring and pool.stats()["workers"] == 0)
        with pytest.raises(FlashError, match="shut down"):
            await pool.submit(fn_call(sleepy_pid, 0))

    run(bare_spec, PoolConfig("p"), body)


def test_closing_hands_back_queued_calls(bare_spec: WorkerSpec) -> None:
    async def body(pool: Pool) -> None:
        handed: list[str] = []
        running = asyncio.ensure_future(result(pool, fn_call(sleepy_pid, 30)))
        await wait_until(lambda: pool.stats()["busy"] == 1)
        token = events.call_handed_back.set(lambda: handed.append("queued"))
        queued = asyncio.ensure_future(result(pool, fn_call(sleepy_pid, 30)))
        events.call_handed_back.reset(token)
        await wait_until(lambda: pool.stats()["queued"] == 1)
        await pool.close()
        with pytest.raises(FlashError, match="before a worker took the call"):
            await queued
        with pytest.raises(FlashError, match="before the call finished"):
            await running
        assert handed == ["queued"]  # the running call was taken: it is not handed back

    run(bare_spec, PoolConfig("p"), body)


def test_instances_stay_on_the_worker_that_made_them(bare_spec: WorkerSpec) -> None:
    class Counter:
        def __init__(self, start: int) -> None:
            self.n = start

        def bump(self) -> tuple[int, int]:
            self.n += 1
            return self.n, os.getpid()

    blob = cloudpickle.dumps(Counter)

    def method_call(instance: str, start: int) -> Call:
        return Call(
            protocol.OP_METHOD,
            instance,
            blob,
            cloudpickle.dumps(((), {})),
            label="Counter.bump()",
            method="bump",
            init_args=cloudpickle.dumps(((start,), {})),
        )

    async def body(pool: Pool) -> None:
        a = [await result(pool, method_call("a", 10)) for _ in range(3)]
        b = [await result(pool, method_call("b", 100)) for _ in range(2)]
        assert [n for n, _ in a] == [11, 12, 13]
        assert [n for n, _ in b] == [101, 102]
        assert len({pid for _, pid in a}) == 1
        pool.release_instance("a")
        assert "a" not in pool.instance_home

    run(bare_spec, PoolConfig("p", workers_max=2), body)


def test_calls_arriving_while_an_instance_is_built_wait_for_it(bare_spec: WorkerSpec) -> None:
    class Slow:
        def __init__(self) -> None:
            import time

            time.sleep(0.5)
            self.made = 1

        async def get(self) -> int:
            self.made += 1
            return self.made

    blob = cloudpickle.dumps(Slow)

    def call() -> Call:
        return Call(
            protocol.OP_METHOD,
            "slow",
            blob,
            cloudpickle.dumps(((), {})),
            label="Slow.get()",
            method="get",
            init_args=cloudpickle.dumps(((), {})),
        )

    async def body(pool: Pool) -> list[int]:
        return sorted(await asyncio.gather(*(result(pool, call()) for _ in range(4))))

    assert run(bare_spec, PoolConfig("p", max_concurrency=4), body) == [2, 3, 4, 5]


def test_an_instance_lost_with_its_worker_is_created_again_with_a_warning(
    bare_spec: WorkerSpec, caplog: pytest.LogCaptureFixture
) -> None:
    class Box:
        def __init__(self) -> None:
            self.n = 0

        def bump(self) -> int:
            self.n += 1
            return self.n

        def die(self) -> None:
            os._exit(1)

    blob = cloudpickle.dumps(Box)

    def call(method: str) -> Call:
        return Call(
            protocol.OP_METHOD,
            "box",
            blob,
            cloudpickle.dumps(((), {})),
            label=f"Box.{method}()",
            method=method,
            init_args=cloudpickle.dumps(((), {})),
        )

    async def body(pool: Pool) -> list[int]:
        values = [await result(pool, call("bump")), await result(pool, call("bump"))]
        with pytest.raises(WorkerCrashedError):
            await result(pool, call("die"))
        values.append(await result(pool, call("bump")))
        return values

    assert run(bare_spec, PoolConfig("p"), body) == [1, 2, 1]
    assert "the instance behind Box.bump() was lost with its worker" in caplog.text


def test_a_failed_start_leaves_the_calls_to_a_worker_still_starting(
    bare_spec: WorkerSpec, tmp_path: Path
) -> None:
    """Two calls at once start two workers; the first start fails at once (its interpreter
    exits, as one killed while starting would), while the second is still starting: the calls
    wait for that one rather than failing with the first's error. The stand-in interpreter is
    a script in front of the environment's: its first run exits 3, the later ones wait for the
    test's go-ahead (given once the pool has dropped the failed worker) and run the real one."""
    assert isinstance(bare_spec.target, LocalTarget)
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'if mkdir "{tmp_path}/first" 2>/dev/null; then exit 3; fi\n'
        f'while [ ! -e "{tmp_path}/go" ]; do sleep 0.05; done\n'
        f'exec "{bare_spec.target.python}" "$@"\n'
    )
    python.chmod(0o755)
    flaky = WorkerSpec(
        endpoint="flaky",
        target=LocalTarget(python, bare_spec.target.runtime_path),
        cwd=bare_spec.cwd,
    )

    async def body(pool: Pool) -> list[int]:
        calls = [asyncio.ensure_future(result(pool, fn_call(getpid))) for _ in range(2)]
        await wait_until(lambda: (tmp_path / "first").exists() and pool.stats()["workers"] == 1)
        assert pool.stats()["starting"] == 1  # the other start goes on
        (tmp_path / "go").touch()
        return list(await asyncio.gather(*calls))

    pids = run(flaky, PoolConfig("flaky", workers_max=2), body)
    assert len(pids) == 2 and all(pids)
