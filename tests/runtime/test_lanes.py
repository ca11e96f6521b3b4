"""A worker lent to a script's own event loop (runtime/lanes.py, runtime/lending.py): warm plain
calls from ``asyncio.run`` go on the worker's socket from that loop, and every semantic of a call
holds (errors, a killed worker, a cancelled await, the execution timeout, nested calls, a second
``asyncio.run``, several threads' loops, the idle timeout, a stop). Real workers, real pools.

An endpoint's first call runs as a task of the runtime's loop (its pool is prepared, its
worker starts): its worker is lent after the next call, a hop of a warm pool. Which path a call
took is observed, not assumed: the pool's ``lent`` and ``lane_calls`` figures,
and a spy on ``Lane.send`` (the real method runs; the spy notes whether the lane took the call).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import openflash
from openflash import CpuLiveServerless, remote
from openflash.errors import ExecutionTimeoutError, FlashError, WorkerCrashedError
from openflash.runtime import lanes, process
from openflash.workers import events

pytestmark = pytest.mark.usefixtures("flash_home")


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The label of each call the lane took (its ``send`` gave a future)."""
    seen: list[str] = []
    send = lanes.Lane.send

    def spy(self: lanes.Lane, call: Any) -> Any:
        waiter = send(self, call)
        if waiter is not None:
            seen.append(call.label)
        return waiter

    monkeypatch.setattr(lanes.Lane, "send", spy)
    yield seen


def stats(handle: Any) -> dict[str, Any]:
    found = process.get_runtime().pool_stats(handle.endpoint)
    assert found is not None
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):  # gone, or reaped between the two
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@remote(CpuLiveServerless(name="lanes-plain", workersMax=1))
def double(x: int) -> int:
    return 2 * x


@remote(CpuLiveServerless(name="lanes-plain", workersMax=1))
def checked(x: int) -> int:
    if x < 0:
        raise ValueError(f"bad value {x}")
    return x


def test_warm_calls_from_a_scripts_loop_run_on_the_lent_worker(taken: list[str]) -> None:
    async def main() -> tuple[list[int], list[str], dict[str, Any]]:
        results = [await double(i) for i in range(200)]
        errors = []
        # A function's first call finds its pool as a task of the runtime's loop, its second
        # brings the function (the worker lent again after it); the errors take the lane.
        assert [await checked(1), await checked(2)] == [1, 2]
        for i in range(1, 4):
            with pytest.raises(ValueError) as info:
                await checked(-i)
            errors.append(f"{type(info.value).__name__}: {str(info.value).splitlines()[0]}")
        return results, errors, stats(double)

    results, errors, figures = asyncio.run(main())
    assert results == [2 * i for i in range(200)]
    # a remote error as on the hop: the user's type (a subclass), its message, its traceback
    assert errors == [f"RemoteValueError: ValueError: bad value {-i}" for i in range(1, 4)]
    assert figures["lent"] == 1
    # all but the first two (and any whose worker sent what it imported with the reply)
    assert figures["lane_calls"] >= 190 and taken.count("double()") >= 190
    assert taken.count("checked()") == 3


@remote(CpuLiveServerless(name="lanes-sizes", workersMax=1))
def filled(size: int) -> bytes:
    return b"x" * size


def test_large_and_shared_memory_results_of_lane_calls_reach_their_callers(
    monkeypatch: pytest.MonkeyPatch, taken: list[str]
) -> None:
    """A result of 64 KiB or more is read by the pool (preallocated), and one from
    FLASH_SHARED_MEMORY_MIN comes in a memfd whose descriptor the lane keeps for the pool."""
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", "1M")
    sizes = [10, 70_000, 10, 3_000_000, 10, 3_000_000, 10]

    async def main() -> list[int]:
        await filled(0)
        await filled(0)
        taken.clear()
        return [len(await filled(size)) for size in sizes]

    assert asyncio.run(main()) == sizes
    assert taken == ["filled()"] * len(sizes)  # each went on the lane, lent again after


@remote(CpuLiveServerless(name="lanes-buffers", workersMax=1))
def measured(value: Any) -> int:
    return len(value)


def test_a_caller_whose_calls_never_take_the_lane_is_not_lent_a_worker() -> None:
    """Arguments with an out-of-band buffer always hop: lending the worker to their loop would
    only make the next call take it back."""

    async def main() -> tuple[list[int], dict[str, Any]]:
        lengths = [await measured(memoryview(b"x" * (70_000 + i))) for i in range(5)]
        return lengths, stats(measured)

    lengths, figures = asyncio.run(main())
    assert lengths == [70_000 + i for i in range(5)]
    assert figures["lent"] == 0 and figures["lane_calls"] == 0


@remote(CpuLiveServerless(name="lanes-slow", workersMax=1))
def slow(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_worker_killed_during_a_lane_call_fails_it_and_the_next_call_works(
    taken: list[str],
) -> None:
    async def main() -> tuple[int, int, str, int]:
        pid = await slow(0)
        assert await slow(0) == pid  # warm: its worker is lent now
        call = asyncio.ensure_future(slow(60))
        await asyncio.sleep(0.5)  # sent, and running in its worker
        figures = stats(slow)
        assert taken == ["slow()"] and figures["lent"] == 1
        assert figures["busy"] == 1 and figures["detail"][0]["calls"] == 1  # the lane's call
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError) as info:
            await call
        return pid, await slow(0), str(info.value), stats(slow)["lent"]

    pid, after, message, lent = asyncio.run(main())
    assert after != pid
    assert f"pid {pid}" in message and "SIGKILL" in message
    assert lent == 1  # the new worker is lent in turn


@remote(CpuLiveServerless(name="lanes-ticks", workersMax=1))
async def ticks(path: str, count: int) -> int:
    for _ in range(count):
        with open(path, "a") as f:
            f.write("tick\n")
        await asyncio.sleep(0.02)
    return os.getpid()


def test_a_lane_call_given_up_by_wait_for_is_cancelled_in_its_worker(
    tmp_path: Path, taken: list[str]
) -> None:
    path = tmp_path / "ticks"

    async def main() -> tuple[int, int, str, str]:
        before = await ticks(str(tmp_path / "warm"), 1)
        assert await ticks(str(tmp_path / "warm"), 1) == before
        taken.clear()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ticks(str(path), 1500), 1.0)
        await asyncio.sleep(0.3)  # a tick in flight lands
        first = path.read_text()
        await asyncio.sleep(0.5)
        return before, await ticks(str(tmp_path / "warm"), 1), first, path.read_text()

    before, after, first, later = asyncio.run(main())
    assert taken[0] == "ticks()"  # the lane took the call that was given up
    assert first and later == first  # it ran, then stopped in its worker
    assert after == before  # an async function is interrupted: its worker stays


@remote(CpuLiveServerless(name="lanes-timeout", workersMax=1, executionTimeoutMs=1000))
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_lane_call_past_its_execution_timeout_fails_and_its_worker_is_killed(
    taken: list[str],
) -> None:
    async def main() -> tuple[int, str, int]:
        pid = await nap(0)
        assert await nap(0) == pid
        taken.clear()
        with pytest.raises(ExecutionTimeoutError) as info:
            await nap(30)
        return pid, str(info.value), await nap(0)

    pid, message, after = asyncio.run(main())
    assert taken[0] == "nap()"
    assert "ran past its execution timeout (1 s, executionTimeoutMs=1000)" in message
    assert f"(pid {pid}) was killed" in message
    assert after != pid and not alive(pid)


def test_a_second_asyncio_run_uses_the_same_warm_worker(taken: list[str]) -> None:
    async def main() -> tuple[int, list[int], int]:
        pids = {await slow(0) for _ in range(20)}
        assert len(pids) == 1
        return pids.pop(), [await double(i) for i in range(5)], stats(slow)["lane_calls"]

    first, results, lane_calls = asyncio.run(main())
    second, again, lane_calls_after = asyncio.run(main())  # the first loop is closed now
    assert second == first and alive(first)
    assert results == again == [0, 2, 4, 6, 8]
    assert lane_calls >= 15 and lane_calls_after >= lane_calls + 15


@remote(CpuLiveServerless(name="lanes-shared", workersMax=1))
def square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("gather", [False, True])
def test_threads_each_with_its_own_loop_share_one_worker(gather: bool) -> None:
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def script(n: int) -> None:
        async def main() -> list[int]:
            numbers = range(n * 1000, n * 1000 + 200)
            if gather:
                return list(await asyncio.gather(*(square(i) for i in numbers)))
            return [await square(i) for i in numbers]

        try:
            results[n] = asyncio.run(main())
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=script, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert results == {n: [i * i for i in range(n * 1000, n * 1000 + 200)] for n in range(4)}
    assert len(stats(square)["pids"]) == 1


@remote(CpuLiveServerless(name="lanes-idle", workersMin=0, idleTimeout=1))
def idle_pid() -> int:
    return os.getpid()


def test_the_idle_timeout_stops_a_lent_worker() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    unsubscribe = events.subscribe(lambda kind, fields: seen.append((kind, fields)))

    async def main() -> tuple[set[int], int, bool]:
        pids = {await idle_pid() for _ in range(50)}
        lent = stats(idle_pid)["lent"]
        for _ in range(600):  # a bound on the test, not a figure: 30 s at most
            if any(kind == "worker_exited" for kind, __ in seen):
                break
            await asyncio.sleep(0.05)
        return pids, lent, bool(stats(idle_pid)["pids"])

    try:
        pids, lent, still_running = asyncio.run(main())
    finally:
        unsubscribe()
    exited = [fields for kind, fields in seen if kind == "worker_exited"]
    assert lent == 1
    assert [e["pid"] for e in exited] == list(pids)
    assert exited[0]["crashed"] is False
    assert not still_running


@pytest.mark.parametrize("stop", ["shutdown", "configure"])
def test_a_stop_while_a_worker_is_lent_leaves_no_worker_and_no_caller_waiting(
    stop: str, taken: list[str]
) -> None:
    outcome: dict[str, Any] = {}
    running = threading.Event()

    async def main() -> None:
        outcome["pid"] = await slow(0)
        await slow(0)
        call = asyncio.ensure_future(slow(60))
        await asyncio.sleep(0.3)
        running.set()
        try:
            await call
        except FlashError as e:
            outcome["error"] = e

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    assert running.wait(60)
    assert taken == ["slow()"]
    if stop == "shutdown":
        process.shutdown()
    else:
        openflash.configure(backend="local")
    thread.join(30)
    assert not thread.is_alive()  # its caller was answered
    assert "was shut down before the call finished" in str(outcome["error"])
    for _ in range(100):  # a bound on the test, not a figure
        if not alive(outcome["pid"]):
            break
        time.sleep(0.05)
    assert not alive(outcome["pid"])


NESTED = """
    import asyncio
    import json

    from runpod_flash import CpuLiveServerless, remote
    from openflash.runtime import lanes

    taken = []
    send = lanes.Lane.send


    def spy(self, call):
        waiter = send(self, call)
        if waiter is not None:
            taken.append(call.label)
        return waiter


    lanes.Lane.send = spy


    @remote(CpuLiveServerless(name="lanes-inner"))
    def inner(x: int) -> int:
        return x * x


    @remote(CpuLiveServerless(name="lanes-outer"))
    def outer(x: int) -> int:
        return asyncio.run(inner(x)) + 1


    async def main() -> list:
        return [await outer(i) for i in range(6)]


    if __name__ == "__main__":
        print(json.dumps([asyncio.run(main()), taken]))
"""


def test_a_function_on_a_lent_worker_makes_nested_calls(
    tmp_path: Path, session_home: Path, uv_cache: Path, apt_dir: Path
) -> None:
    from helpers import run_python, write

    script = write(tmp_path / "nested.py", NESTED)
    env = {
        "FLASH_HOME": str(session_home),
        "FLASH_UV_CACHE_DIR": str(uv_cache),
        "FLASH_APT_DIR": str(apt_dir),
    }
    done = run_python(script, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    results, taken = json.loads(done.stdout.splitlines()[-1])
    assert results == [i * i + 1 for i in range(6)]
    assert taken == ["outer()"] * 4  # the first two find the pool, then bring the function


@remote(CpuLiveServerless(name="lanes-classes", workersMax=2))
class Tally:
    def __init__(self) -> None:
        self.count = 0

    def add(self) -> tuple[int, int]:
        self.count += 1
        return os.getpid(), self.count


@remote(CpuLiveServerless(name="lanes-classes", workersMax=2))
def where(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_an_instance_on_a_lent_worker_is_reached_while_another_worker_is_free(
    taken: list[str],
) -> None:
    """A method call goes to the worker that holds its instance: taken back from its lane even
    when another worker has room (else the call would wait in the queue for ever)."""

    async def main() -> tuple[set[int], int, int, list[int]]:
        pids = set(await asyncio.gather(where(0.5), where(0.5)))  # two workers, both idle now
        tally = Tally()
        home, first = await tally.add()
        await where(0)
        await where(0)  # lent after this one: the first worker, where the instance lives
        lent_to = stats(where)["detail"]
        assert [w["pid"] for w in lent_to if w["lent"]] == [home], lent_to
        again = await asyncio.wait_for(tally.add(), 30)  # a bound on the test, not a figure
        return pids, home, again[0], [first, again[1]]

    pids, home, again, counts = asyncio.run(main())
    assert len(pids) == 2 and home in pids
    assert again == home and counts == [1, 2]


@remote(CpuLiveServerless(name="lanes-dies-idle", workersMax=1))
def resident() -> int:
    return os.getpid()


def test_a_worker_that_dies_while_lent_to_a_closed_loop_is_not_sent_the_next_call(
    taken: list[str],
) -> None:
    """A worker lent to a loop that ``asyncio.run`` has closed is read by nobody: its death
    (here SIGKILL; the OOM killer alike) is seen when it is taken back, before a call is sent to
    it, so the next call starts a new worker as it would had the pool been reading it."""

    async def warm() -> tuple[int, int]:
        return await resident(), await resident()

    seen: list[dict[str, Any]] = []
    unsubscribe = events.subscribe(
        lambda kind, fields: seen.append(fields) if kind == "worker_exited" else None
    )
    try:
        first, again = asyncio.run(warm())
        assert first == again and stats(resident)["lent"] == 1
        (lane,) = [w.lane for p in process.get_runtime()._pools.values() for w in p.workers]
        os.kill(first, signal.SIGKILL)
        # its end of the socket closed (all its holders gone): what the pool would have read
        poller = select.poll()
        poller.register(lane.sock.fileno(), select.POLLRDHUP)
        assert poller.poll(30_000)  # a bound on the test, not a figure
        deadline = time.monotonic() + 30
        while alive(first):  # a dying process closes its files before it becomes a zombie
            assert time.monotonic() < deadline, f"pid {first} still alive"
            time.sleep(0.01)
        after = asyncio.run(resident())  # a WorkerCrashedError before the fix
    finally:
        unsubscribe()
    assert after != first and alive(after)
    # told as the death of a ready worker, as when the pool reads it (not a stop of its own)
    assert [e["crashed"] for e in seen if e["pid"] == first] == [True]


def test_many_asyncio_runs_leave_no_descriptor_or_lane_behind(taken: list[str]) -> None:
    """Each ``asyncio.run`` is lent the warm worker in turn, its lane taken back at the next
    one's first call: the duplicate sockets are closed and the lanes collected (one lent at most,
    to the last loop)."""

    async def two() -> tuple[int, int]:
        return await double(1), await double(2)

    def held() -> tuple[int, int]:
        gc.collect()
        sockets = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        return sockets, sum(isinstance(o, lanes.Lane) for o in gc.get_objects())

    asyncio.run(two())
    asyncio.run(two())
    before = held()
    taken.clear()
    for _ in range(200):
        assert asyncio.run(two()) == (2, 4)
    after = held()
    assert len(taken) >= 200  # the lanes were used, not bypassed
    # one descriptor kept per run would be 200 more; a worker or template started meanwhile
    # by the machine's state would be a few
    assert after[0] - before[0] < 10, (before, after)
    assert after[1] == before[1] == 1


def test_a_worker_lent_to_a_blocked_loop_is_taken_back_for_another_threads_call(
    taken: list[str],
) -> None:
    """The runtime takes its worker back without the borrower's loop: a call from another
    thread runs while the loop it is lent to is blocked (a sync wait inside a coroutine), and
    the blocked loop's next call works after."""
    other: dict[str, Any] = {}
    answered = threading.Event()

    def elsewhere() -> None:
        other["result"] = asyncio.run(square(7))
        answered.set()

    async def main() -> tuple[bool, int]:
        await square(1)
        await square(2)
        assert stats(square)["lent"] == 1  # lent to this loop, which now blocks
        thread = threading.Thread(target=elsewhere)
        thread.start()
        done = answered.wait(60)  # blocks this loop; a bound on the test, not a figure
        thread.join(60)
        return done, await square(3)

    taken.clear()
    done, after = asyncio.run(main())
    assert done and other["result"] == 49 and after == 9


@openflash.Endpoint(name="lanes-partial", workers=(1, 1), max_concurrency=200)
def sized(data: bytes) -> tuple[int, int]:
    return os.getpid(), len(data)


def test_a_call_frame_written_in_part_on_the_lane_is_finished_by_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stopped worker (SIGSTOP) reads nothing: the lane's socket fills, a CALL frame goes in
    part, the rest is written by the pool before anything else, and every call is answered once
    the worker runs again (no byte lost or doubled across the hand-back)."""
    partial: list[int] = []
    send = lanes.Lane.send

    def spy(self: lanes.Lane, call: Any) -> Any:
        waiter = send(self, call)
        if self.unsent:
            partial.append(len(self.unsent))
        return waiter

    monkeypatch.setattr(lanes.Lane, "send", spy)
    payloads = [bytes([i]) * (15_000 + i) for i in range(100)]

    async def main() -> tuple[int, list[tuple[int, int]], int]:
        pid = (await sized(b"warm"))[0]
        await sized(b"warm")  # lent after this one
        assert stats(sized)["lent"] == 1
        os.kill(pid, signal.SIGSTOP)
        try:
            calls = [asyncio.ensure_future(sized(p)) for p in payloads]
            await asyncio.sleep(0)  # each sent on the lane, or hopped once it was handed back
        finally:
            os.kill(pid, signal.SIGCONT)
        replies = await asyncio.wait_for(asyncio.gather(*calls), 120)  # a bound, not a figure
        return pid, list(replies), (await sized(b"after"))[0]

    pid, replies, after = asyncio.run(main())
    assert partial and partial[0] > 0  # a frame went in part (the path under test)
    assert replies == [(pid, len(p)) for p in payloads] and after == pid


def test_a_lane_call_past_its_execution_timeout_is_ended_while_its_loop_is_blocked(
    taken: list[str],
) -> None:
    """The execution timeout bounds the worker, not the caller's loop: a lane call past it is
    failed and its worker killed while the loop that sent it is blocked (a sync wait), as a
    call that hopped is (its timer on the runtime's loop)."""

    async def main() -> tuple[int, bool]:
        pid = await nap(0)
        assert await nap(0) == pid
        taken.clear()
        call = asyncio.ensure_future(nap(60))
        await asyncio.sleep(0)  # its first step: sent on the lane
        assert taken == ["nap()"]
        killed = False
        for _ in range(150):  # this loop blocked; a bound on the test (15 s), not a figure
            if not alive(pid):
                killed = True
                break
            time.sleep(0.1)
        with pytest.raises(ExecutionTimeoutError):
            await call
        return pid, killed

    pid, killed = asyncio.run(main())
    assert killed, f"worker {pid} still ran its call past the execution timeout"


@remote(CpuLiveServerless(name="lanes-memfd", workersMax=1))
def filled_with(byte: int, size: int) -> bytes:
    return bytes([byte]) * size


def test_a_worker_taken_back_with_a_shared_memory_result_unread_gives_each_its_file(
    monkeypatch: pytest.MonkeyPatch, taken: list[str]
) -> None:
    """A lane call's result in a memfd waits in the socket while its loop is blocked; another
    thread's call takes the worker back: looking whether the worker is alive must not take a
    copy of the descriptor on its way, or the next result would get the earlier one's file."""
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", "1M")
    size = 3_000_000
    other: dict[str, bytes] = {}

    def elsewhere() -> None:
        other["result"] = asyncio.run(filled_with(2, size))

    async def main() -> bytes:
        await filled_with(0, 10)
        await filled_with(0, 10)
        lane = lanes.lanes_of(asyncio.get_running_loop())
        assert lane is not None and len(lane) == 1
        sock = next(iter(lane.values())).sock
        taken.clear()
        call = asyncio.ensure_future(filled_with(1, size))
        await asyncio.sleep(0)  # its first step: sent on the lane
        assert taken == ["filled_with()"]
        # this loop blocked: its reply (and its memfd) waits in the socket, read by nobody
        assert select.select([sock], [], [], 60)[0]  # a bound on the test, not a figure
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
        return await call

    mine = asyncio.run(main())
    assert mine == bytes([1]) * size
    assert other["result"] == bytes([2]) * size
