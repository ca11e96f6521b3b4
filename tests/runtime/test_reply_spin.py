"""A warm lane call's caller watches its worker's socket busy for the reply, for at most
FLASH_REPLY_SPIN_US, when its loop has nothing else ready (runtime/lanes.py ``Lane.settle``):
the await then never suspends. Real workers, real pools; which way a reply came is observed by
counting the loop's waits in its selector (a real epoll selector that counts), not assumed.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from openflash import CpuLiveServerless, remote
from openflash._settings import REPLY_SPIN, Settings
from openflash.errors import ConfigError, WorkerCrashedError
from openflash.runtime import lanes, process

pytestmark = pytest.mark.usefixtures("flash_home")

T = TypeVar("T")


class CountingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The loop's selector: how many times the loop waited in it."""

    waits = 0

    def select(self, timeout: float | None = None) -> Any:
        self.waits += 1
        return super().select(timeout)


def run(main: Callable[[CountingSelector], Awaitable[T]]) -> T:
    """``main(selector)`` on a new selector loop of its own, as ``asyncio.run`` would."""
    selector = CountingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    try:
        return loop.run_until_complete(main(selector))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture
def several_cpus() -> Iterator[None]:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("spinning needs a second CPU for the worker (this process has one)")
    yield


@remote(CpuLiveServerless(name="spin-plain", workersMax=1))
def double(x: int) -> int:
    return 2 * x


@remote(CpuLiveServerless(name="spin-plain", workersMax=1))
def slow_double(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return 2 * x


async def warm(selector: CountingSelector) -> None:
    """The endpoint's worker started, holding both functions, and lent to this loop (a call's
    reply lends it, the lane then takes the functions its worker holds)."""
    for i in range(3):
        assert await double(i) == 2 * i
        assert await slow_double(i, 0) == 2 * i


@pytest.mark.usefixtures("several_cpus")
def test_a_reply_within_the_spin_settles_the_call_without_a_wait_in_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")  # a second: any reply comes within it

    async def main(selector: CountingSelector) -> tuple[list[int], int, int, int]:
        await warm(selector)
        before = process.get_runtime().pool_stats(double.endpoint)["lane_calls"]  # type: ignore[index]
        waits = selector.waits
        results = [await double(i) for i in range(100)]
        waited = selector.waits - waits
        after = process.get_runtime().pool_stats(double.endpoint)["lane_calls"]  # type: ignore[index]
        return results, waited, before, after

    results, waited, before, after = run(main)
    assert results == [2 * i for i in range(100)]
    assert after - before == 100  # every one on the lent worker
    assert waited == 0  # and none waited in the loop's selector


def test_with_the_spin_off_every_reply_comes_through_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "0")

    async def main(selector: CountingSelector) -> tuple[list[int], int, int]:
        await warm(selector)
        waits = selector.waits
        results = [await double(i) for i in range(50)]
        lane_calls = process.get_runtime().pool_stats(double.endpoint)["lane_calls"]  # type: ignore[index]
        return results, selector.waits - waits, int(lane_calls)  # type: ignore[call-overload]

    results, waited, lane_calls = run(main)
    assert results == [2 * i for i in range(50)]
    assert lane_calls >= 50 and waited >= 50  # lane calls, each reply waited for by the loop


@pytest.mark.usefixtures("several_cpus")
def test_after_a_reply_slower_than_the_spin_calls_wait_in_the_loop_until_one_is_quick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "100000")  # 0.1 s

    async def main(selector: CountingSelector) -> list[int]:
        await warm(selector)
        waited = []
        for seconds in [0, 0.6, 0, 0, 0]:
            waits = selector.waits
            assert await slow_double(7, seconds) == 14
            waited.append(selector.waits - waits)
        return waited

    quick, slow, first, *rest = run(main)
    # the first fast call after the slow one still goes through the loop (its lane's last reply
    # came late); it comes within the spin, so the next ones do not wait there
    assert quick == 0 and slow >= 1 and first >= 1
    assert rest == [0, 0]


@pytest.mark.usefixtures("several_cpus")
def test_a_loop_with_another_task_ready_runs_it_while_the_call_is_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")
    order: list[str] = []

    async def call() -> None:
        await slow_double(1, 0.2)
        order.append("replied")

    async def other() -> None:
        order.append("other ran")

    async def main(selector: CountingSelector) -> None:
        await warm(selector)
        await asyncio.gather(call(), other())  # the call's task sends first, then ``other``

    run(main)
    assert order == ["other ran", "replied"]


def test_one_cpu_never_spins(monkeypatch: pytest.MonkeyPatch) -> None:
    """On one CPU, spinning would only keep the worker from running: the loop waits."""
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:

        async def main(selector: CountingSelector) -> tuple[list[int], int]:
            await warm(selector)
            waits = selector.waits
            results = [await double(i) for i in range(30)]
            return results, selector.waits - waits

        results, waited = run(main)
    finally:
        os.sched_setaffinity(0, cpus)
    assert results == [2 * i for i in range(30)]
    assert waited >= 30


@pytest.mark.usefixtures("several_cpus")
def test_a_caller_thread_pinned_to_one_cpu_never_spins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPUs are the calling thread's: here the runtime's thread (which makes the lane) may
    use every CPU, the caller's thread one."""
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")
    found: list[tuple[list[int], int]] = []

    async def main(selector: CountingSelector) -> tuple[list[int], int]:
        await warm(selector)
        waits = selector.waits
        results = [await double(i) for i in range(30)]
        return results, selector.waits - waits

    def pinned() -> None:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # this thread alone
        found.append(run(main))

    process.get_runtime()  # started here first: its thread may use every CPU
    thread = threading.Thread(target=pinned)
    thread.start()
    thread.join()
    [(results, waited)] = found
    assert results == [2 * i for i in range(30)]
    assert waited >= 30


@remote(CpuLiveServerless(name="spin-exit", workersMax=1))
def leave(code: int) -> int:
    if code:
        os._exit(code)
    return os.getpid()


@pytest.mark.usefixtures("several_cpus")
def test_a_worker_that_exits_while_its_caller_spins_fails_the_call_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")

    async def main(selector: CountingSelector) -> tuple[int, str, int, int]:
        pid = await leave(0)
        assert await leave(0) == pid  # lent now
        spin = lane_of(leave).spin
        with pytest.raises(WorkerCrashedError) as info:
            await leave(3)
        return pid, str(info.value), await leave(0), spin.missed

    pid, message, after, missed = run(main)
    assert f"pid {pid}" in message and "exit code 3" in message
    assert after != pid
    assert missed == 0  # the spin saw the socket's end: it did not run its second out


@pytest.mark.parametrize("text", ["abc", "-1", "nan", "inf", "2000000"])
def test_a_bad_reply_spin_is_named_with_what_to_set(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FLASH_REPLY_SPIN_US": text})
    assert f"FLASH_REPLY_SPIN_US={text!r}" in str(info.value)
    assert "microseconds" in info.value.hint


@pytest.mark.parametrize(
    ("text", "seconds"), [("", REPLY_SPIN), ("0", 0.0), ("250", 250e-6), (" 40.5 ", 40.5e-6)]
)
def test_reply_spin_values(text: str, seconds: float) -> None:
    assert Settings.from_env({"FLASH_REPLY_SPIN_US": text}).reply_spin == pytest.approx(seconds)


def lane_of(handle: Any) -> Any:
    """The lane of ``handle``'s endpoint on the running loop (its worker lent to it)."""
    pool = process.get_runtime()._endpoint_pools[handle.endpoint]
    found = lanes.lanes_of(asyncio.get_running_loop())
    assert found is not None and found[pool].lent
    return found[pool]


@pytest.mark.usefixtures("several_cpus")
def test_a_run_of_calls_settled_by_spins_lets_the_loop_see_its_sockets_and_timers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call settled by a spin returns to its caller without its loop running: a run of them
    must not keep the loop from its other sockets and timers much longer than one spin. A
    socket readable and a timer due before the run are seen during it: each call takes 10 ms or
    more, so 150 of them take longer than the spin (a second), which each one's reply beats."""
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")

    async def main(selector: CountingSelector) -> tuple[list[int], list[int], int]:
        await warm(selector)
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        read: list[int] = []
        timed: list[int] = []
        done = 0

        def readable() -> None:
            read.append(done)
            loop.remove_reader(ours)

        loop.add_reader(ours, readable)
        loop.call_later(0.001, lambda: timed.append(done))
        theirs.send(b"x")
        time.sleep(0.01)  # the timer due
        for i in range(150):
            assert await slow_double(i, 0.01) == 2 * i
            done += 1
        caught = lane_of(slow_double).spin.caught
        ours.close()
        theirs.close()
        return read, timed, caught

    read, timed, caught = run(main)
    assert caught >= 100  # most calls were settled by their spin
    assert read and read[0] < 150 and timed and timed[0] < 150  # seen before the run's end


@pytest.mark.usefixtures("several_cpus")
def test_calls_of_a_slow_function_do_not_stop_a_quick_ones_calls_from_spinning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Calls alternating between a quick function and one slower than the spin: the slow one's
    calls spin in vain once, not every time, and the quick one's keep settling in their spin
    (with one rule for the lane, every slow call would spin to its end, after a quick reply, and
    no quick call would spin, after a slow one)."""
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "300000")  # 0.3 s: any quick reply comes within it

    async def main(selector: CountingSelector) -> tuple[list[int], int, int]:
        await warm(selector)
        lane = lane_of(double)
        caught = lane.spin.caught
        waited = []
        for i in range(5):
            waits = selector.waits
            assert await double(i) == 2 * i
            waited.append(selector.waits - waits)
            assert await slow_double(i, 0.6) == 2 * i
        assert lane_of(double) is lane
        return waited, lane.spin.caught - caught, lane.spin.missed

    waited, caught, missed = run(main)
    assert waited == [0] * 5 and caught >= 5
    assert missed == 1


@pytest.mark.usefixtures("several_cpus")
def test_a_function_whose_calls_alternate_quick_and_slow_stops_spinning_in_vain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One function whose calls alternate between quick and slower than the spin: each spin
    that misses doubles the quick replies in a row its calls need before they spin again, so
    its spins stop missing (with a spin after every quick reply, each slow call would miss)."""
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "300000")  # 0.3 s: any quick reply comes within it

    async def main(selector: CountingSelector) -> tuple[int, int]:
        await warm(selector)
        lane = lane_of(slow_double)
        for i in range(6):
            assert await slow_double(i, 0) == 2 * i
            assert await slow_double(i, 0.6) == 2 * i
        return lane.spin.caught, lane.spin.missed

    caught, missed = run(main)
    assert caught >= 1 and missed <= 2


task_factories = [lambda loop, coro, **kw: asyncio.Task(coro, loop=loop, **kw)]
if hasattr(asyncio, "eager_task_factory"):  # Python 3.12
    task_factories.append(asyncio.eager_task_factory)


@pytest.mark.usefixtures("several_cpus")
@pytest.mark.parametrize("factory", task_factories)
def test_a_loop_with_a_task_factory_never_spins(
    monkeypatch: pytest.MonkeyPatch, factory: Any
) -> None:
    """With a task factory (Python 3.12's ``eager_task_factory`` runs a new task's first step
    inside ``create_task``: a gather's later tasks are in no ready queue while the first one's
    call is out, and a spin would run them one after the other) the loop's ready callbacks do
    not tell whether anything else waits to run: such a loop never spins."""
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")

    async def main(selector: CountingSelector) -> tuple[list[int], int, int]:
        await warm(selector)
        asyncio.get_running_loop().set_task_factory(factory)
        spin = lane_of(double).spin
        waits, caught = selector.waits, spin.caught + spin.missed
        results = [await double(i) for i in range(30)]
        return results, selector.waits - waits, spin.caught + spin.missed - caught

    results, waited, spun = run(main)
    assert results == [2 * i for i in range(30)]
    assert waited >= 30 and spun == 0


@remote(CpuLiveServerless(name="spin-held", workersMax=1))
def held(x: int, gate: str) -> int:
    """``x`` once the file ``gate``.go exists (``gate``.started says the call runs)."""
    with open(gate + ".started", "w"):
        pass
    while not os.path.exists(gate + ".go"):
        time.sleep(0.001)
    return x


@remote(CpuLiveServerless(name="spin-exit", workersMax=1))
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@pytest.mark.usefixtures("several_cpus")
def test_an_await_given_up_during_a_spin_that_misses_cancels_the_call_in_its_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``wait_for``'s timer comes due while the caller spins for a reply that does not come: the
    timer runs once the spin ends, the call is cancelled in its worker (a sync function: its
    worker is replaced after the grace) and the next call gets a new worker."""
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")
    monkeypatch.setenv("FLASH_CANCEL_GRACE_S", "0.2")

    async def main(selector: CountingSelector) -> tuple[int, int, int]:
        pid = await nap(0)
        assert await nap(0) == pid  # lent now
        spin = lane_of(nap).spin
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(nap(30), 0.1)
        return pid, spin.missed, await nap(0)

    pid, missed, after = run(main)
    assert missed == 1  # the spin ran to its end, then the timer
    assert after != pid


@pytest.mark.usefixtures("several_cpus")
def test_a_spin_stops_as_its_worker_is_taken_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The runtime's thread takes the lent worker back (another thread's call needs it) while
    the caller spins for its reply: the reply is then the pool's to read, so the spin stops
    there, not at its end (a spin of a second here), and is not counted as one that missed; the
    reply reaches the caller once, and the other call runs after it. The worker answers only
    after the spin has stopped (seen in the caller's stack from another thread): a spin that
    ran on would be counted as missed."""
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")
    warm_gate, gate = str(tmp_path / "warm"), str(tmp_path / "gate")
    Path(warm_gate + ".go").touch()
    caller = threading.get_ident()
    other: list[int] = []

    def other_call() -> None:
        while not os.path.exists(gate + ".started"):
            time.sleep(0.001)
        other.append(asyncio.run(held(2, warm_gate)))

    def release() -> None:
        while not os.path.exists(gate + ".started"):
            time.sleep(0.001)
        while process.get_runtime().pool_stats(held.endpoint)["lent"]:  # type: ignore[index]
            time.sleep(0.001)
        while any(  # the spin still runs
            f.name == "_watch" and f.filename.endswith("spins.py")
            for f in traceback.extract_stack(sys._current_frames()[caller])
        ):
            time.sleep(0.001)
        Path(gate + ".go").touch()

    async def main(selector: CountingSelector) -> tuple[int, int]:
        for i in range(3):
            assert await held(i, warm_gate) == i
        spin = lane_of(held).spin
        missed = spin.missed
        threads = [threading.Thread(target=f) for f in (other_call, release)]
        for thread in threads:
            thread.start()
        try:
            result = await held(1, gate)
        finally:
            for thread in threads:
                thread.join()
        return result, spin.missed - missed

    result, missed = run(main)
    assert result == 1 and other == [2]
    assert missed == 0


QUOTA_CHILD = """
import asyncio, selectors, sys
from openflash import CpuLiveServerless, remote
from openflash.runtime import lanes, process

@remote(CpuLiveServerless(name="spin-quota", workersMax=1))
def triple(x: int) -> int:
    return 3 * x

class CountingSelector(selectors.DefaultSelector):
    waits = 0
    def select(self, timeout=None):
        self.waits += 1
        return super().select(timeout)

async def main(selector):
    for i in range(3):
        assert await triple(i) == 3 * i
    waits = selector.waits
    assert [await triple(i) for i in range(30)] == [3 * i for i in range(30)]
    pool = process.get_runtime()._endpoint_pools[triple.endpoint]
    spin = lanes.lanes_of(asyncio.get_running_loop())[pool].spin
    print(selector.waits - waits, spin.caught + spin.missed)

selector = CountingSelector()
loop = asyncio.SelectorEventLoop(selector)
loop.run_until_complete(main(selector))
"""


def cpu_quota_group(tmp_path: Path) -> Iterator[Path]:
    """A real cgroup of its own, allowed one CPU of time (a quota: ``docker run --cpus=1``,
    Kubernetes' ``limits.cpu: 1``) while the affinity keeps every CPU: its ``cgroup.procs``.
    Skips where no CPU controller can be made here (not root, none mounted or delegated)."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    for line in mounts:
        fields = line.split()
        kind, options = fields[fields.index("-") + 1], fields[-1].split(",")
        base = Path(fields[4])
        if kind == "cgroup" and "cpu" in options:
            files = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}
        elif kind == "cgroup2" and "cpu" in (base / "cgroup.subtree_control").read_text().split():
            files = {"cpu.max": "100000 100000"}
        else:
            continue
        group = base / f"openflash-test-{os.getpid()}-{tmp_path.name}"
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            for name, value in files.items():
                (group / name).write_text(value)
            yield group / "cgroup.procs"
        finally:
            for _ in range(200):  # the child's workers may still be exiting
                if not (group / "cgroup.procs").read_text().strip():
                    break
                time.sleep(0.05)
            group.rmdir()
        return
    pytest.skip("no cgroup CPU controller can be made here (not root, or none delegated)")


@pytest.mark.usefixtures("several_cpus")
def test_a_cpu_quota_of_one_cpu_never_spins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A process whose cgroup allows it one CPU of time spins as if it had one CPU: never (each
    spin spent the quota that its worker and its loop's timers needed; measured, timers 23 ms
    late). A real cgroup with a real quota; the child's loop counts its waits, and its lane the
    spins."""
    monkeypatch.setenv("FLASH_REPLY_SPIN_US", "1000000")
    script = tmp_path / "quota_child.py"
    script.write_text(QUOTA_CHILD)
    for procs in cpu_quota_group(tmp_path):
        child = subprocess.run(
            [sys.executable, "-c", _ENTER_THEN_RUN, str(procs), str(script)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert child.returncode == 0, child.stderr
        waited, spun = map(int, child.stdout.split())
        assert spun == 0 and waited >= 30


# The child moves itself into the group (before openflash starts any thread or worker), then runs.
_ENTER_THEN_RUN = """
import os, runpy, sys
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
runpy.run_path(sys.argv[2], run_name="__main__")
"""
