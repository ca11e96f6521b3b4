"""Calls through the public API: real resolution, real environments, real worker processes."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from openflash import (
    CpuInstanceType,
    CpuLiveServerless,
    DependencyConflictError,
    DependencyError,
    Endpoint,
    ExecutionTimeoutError,
    FlashError,
    RemoteError,
    ServerlessEndpoint,
    WorkerCrashedError,
    remote,
)
from openflash.runtime.process import get_runtime


def run(coro):  # a fresh event loop per call, as scripts using asyncio.run do
    return asyncio.run(coro)


@pytest.mark.usefixtures("flash_home")
def test_async_and_plain_functions_both_return_awaitables() -> None:
    @remote(CpuLiveServerless(name="calls-basic"))
    async def add(a: int, b: int = 0) -> int:
        await asyncio.sleep(0)
        return a + b

    @remote(CpuLiveServerless(name="calls-basic"))
    def mul(a: int, b: int) -> dict:
        return {"product": a * b, "pid": os.getpid()}

    assert run(add(2, b=3)) == 5
    result = run(mul(4, 5))
    assert result["product"] == 20 and result["pid"] != os.getpid()


@pytest.mark.usefixtures("flash_home")
def test_functions_with_the_same_resolved_set_share_one_environment() -> None:
    def prefix() -> str:
        import sys

        return sys.prefix

    a = remote(CpuLiveServerless(name="share-a"), dependencies=["six==1.16.0"])(prefix)
    b = remote(CpuLiveServerless(name="share-b"), dependencies=["Six==1.16.0", "six"])(prefix)
    c = remote(CpuLiveServerless(name="share-c"), dependencies=["six==1.17.0"])(prefix)
    assert run(a()) == run(b())
    assert run(a()) != run(c())


@pytest.mark.usefixtures("flash_home")
def test_a_class_endpoint_keeps_state_across_method_calls() -> None:
    @remote(CpuLiveServerless(name="calls-class", workersMax=2))
    class Counter:
        def __init__(self, start: int, step: int = 1) -> None:
            self.value = start
            self.step = step

        def bump(self) -> int:
            self.value += self.step
            return self.value

        async def peek(self) -> tuple[int, int]:
            return self.value, os.getpid()

    async def scenario() -> None:
        a = Counter(10)
        b = Counter(100, step=5)
        assert [await a.bump() for _ in range(3)] == [11, 12, 13]
        assert await b.bump() == 105
        value, pid = await a.peek()
        assert value == 13 and pid != os.getpid()

    run(scenario())


@pytest.mark.usefixtures("flash_home")
def test_a_failing_constructor_surfaces_at_the_first_method_call() -> None:
    @remote(CpuLiveServerless(name="calls-class-bad"))
    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("no model file")

        def predict(self) -> None: ...

    with pytest.raises(RuntimeError, match="no model file"):
        run(Broken().predict())


@pytest.mark.usefixtures("flash_home")
def test_remote_exceptions_carry_the_remote_traceback_and_their_class() -> None:
    @remote(CpuLiveServerless(name="calls-errors"))
    def validate(value: int) -> int:
        if value < 0:
            raise ValueError(f"negative value: {value}")
        return value

    with pytest.raises(ValueError, match="negative value: -4") as info:
        run(validate(-4))
    error = info.value
    assert isinstance(error, RemoteError)
    assert error.exc_type == "ValueError"
    assert f'File "{__file__}"' in error.remote_traceback
    assert 'raise ValueError(f"negative value: {value}")' in error.remote_traceback
    assert "raised by validate() on endpoint 'calls-errors'" in str(error)
    assert run(validate(3)) == 3  # the worker survives a user exception


@pytest.mark.usefixtures("flash_home")
@pytest.mark.parametrize(
    ("module", "distribution"),
    [
        ("cv2", "opencv-python"),
        ("sklearn", "scikit-learn"),
        ("yaml", "PyYAML"),
        ("PIL", "Pillow"),
        ("bs4", "beautifulsoup4"),
        ("skimage", "scikit-image"),
        ("dateutil", "python-dateutil"),
        ("some_unlisted_module", "some_unlisted_module"),
    ],
)
def test_a_missing_module_says_which_distribution_to_add(module: str, distribution: str) -> None:
    @remote(CpuLiveServerless(name="calls-imports"))
    def use(name: str) -> None:
        __import__(name)

    with pytest.raises(ModuleNotFoundError) as info:
        run(use(module))
    assert isinstance(info.value, RemoteError)
    assert (
        info.value.hint
        == f"add \"{distribution}\" to dependencies=[...] of endpoint 'calls-imports'"
    )


@pytest.mark.usefixtures("flash_home")
def test_a_module_missing_despite_being_declared_gets_another_hint() -> None:
    @remote(CpuLiveServerless(name="calls-imports2"), dependencies=["six"])
    def use() -> None:
        import six.moves.nope  # noqa: F401

    with pytest.raises(ModuleNotFoundError) as info:
        run(use())
    assert "'six' is in dependencies=[...]" in info.value.hint


@pytest.mark.usefixtures("flash_home")
def test_crash_signal_and_timeout_fail_within_a_second_and_the_next_call_works() -> None:
    config = CpuLiveServerless(name="calls-faults", executionTimeoutMs=1000)

    @remote(config)
    async def misbehave(kind: str) -> int:
        if kind == "exit":
            print("exiting now", file=sys.stderr, flush=True)
            os._exit(3)
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "hang":
            await asyncio.sleep(60)
        return os.getpid()

    first = run(misbehave("ok"))
    started = time.monotonic()
    with pytest.raises(WorkerCrashedError) as crash:
        run(misbehave("exit"))
    assert time.monotonic() - started < 1.0
    assert crash.value.exit_code == 3 and "exiting now" in crash.value.stderr_tail
    second = run(misbehave("ok"))
    assert second != first

    started = time.monotonic()
    with pytest.raises(WorkerCrashedError) as crash:
        run(misbehave("kill"))
    assert time.monotonic() - started < 1.0
    assert crash.value.signal == signal.SIGKILL
    third = run(misbehave("ok"))

    started = time.monotonic()
    with pytest.raises(ExecutionTimeoutError, match="executionTimeoutMs=1000"):
        run(misbehave("hang"))
    assert time.monotonic() - started < 1.0 + 1.0  # the timeout, then under a second
    assert run(misbehave("ok")) not in (first, second, third)


def test_conflicts_raise_at_the_first_call_with_uvs_text_and_build_nothing(
    fresh_home: Path,
) -> None:
    @remote(
        CpuLiveServerless(name="calls-conflict"), dependencies=["requests==2.32.3", "urllib3<1.21"]
    )
    async def never() -> None: ...

    with pytest.raises(DependencyConflictError) as info:
        run(never())
    assert "Because requests==2.32.3 depends on urllib3" in str(info.value)
    assert not (fresh_home / "envs").exists() or not list((fresh_home / "envs").iterdir())


@pytest.mark.usefixtures("flash_home")
def test_an_unknown_package_is_named_at_the_first_call() -> None:
    @remote(
        CpuLiveServerless(name="calls-unknown"), dependencies=["openflash-no-such-package-2718"]
    )
    async def never() -> None: ...

    with pytest.raises(DependencyError, match="'openflash-no-such-package-2718' was not found"):
        run(never())


@pytest.mark.usefixtures("flash_home")
def test_unpicklable_arguments_and_results_are_explained() -> None:
    @remote(CpuLiveServerless(name="calls-pickle"))
    def echo(value: object) -> object:
        return value

    @remote(CpuLiveServerless(name="calls-pickle"))
    def make_lock() -> object:
        import threading

        return threading.Lock()

    with pytest.raises(FlashError, match="the arguments of echo\\(\\) cannot be sent"):
        run(echo(threading.Lock()))
    with pytest.raises(TypeError, match="returned a lock, which cannot be pickled"):
        run(make_lock())


@pytest.mark.usefixtures("flash_home")
def test_a_result_needing_a_package_the_caller_lacks_is_explained() -> None:
    # bidict is not installed in the calling environment: only the worker has it.
    with pytest.raises(ImportError):
        import bidict  # noqa: F401

    @remote(CpuLiveServerless(name="calls-bidict"), dependencies=["bidict==0.23.1"])
    def module_object() -> object:
        import bidict

        return bidict.bidict({"a": 1})  # pickled by reference to a class the caller lacks

    with pytest.raises(FlashError, match="could not be unpickled here") as info:
        run(module_object())
    assert "install the packages the result needs" in info.value.hint


@pytest.mark.usefixtures("flash_home")
def test_calls_from_threads_and_many_event_loops_share_one_pool() -> None:
    @Endpoint(name="calls-threads", cpu=CpuInstanceType.CPU3C_1_2, workers=(0, 2))
    async def square(x: int) -> int:
        return x * x

    results: list[int] = []

    def caller(n: int) -> None:
        results.extend(asyncio.run(square(i)) for i in range(n))

    threads = [threading.Thread(target=caller, args=(20,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted([i * i for i in range(20)] * 4)
    stats = get_runtime().pool_stats(square.endpoint)
    assert stats is not None and stats["workers"] <= 2


@pytest.mark.usefixtures("flash_home")
def test_an_image_that_cannot_be_had_names_the_endpoint_and_the_image() -> None:
    # No registry is reachable here: the pull fails, quoting the engine (or, on a machine
    # without one, the engine is missing). tests/backends/test_containers.py runs real images.
    @remote(ServerlessEndpoint(name="calls-image", dockerImage="myregistry/my-image:v1.0"))
    async def in_image() -> None: ...

    with pytest.raises(
        FlashError, match=r"endpoint 'calls-image'.{0,20}image 'myregistry/my-image:v1\.0'"
    ):
        run(in_image())


def test_the_calling_process_exits_cleanly_with_workers_running(tmp_path: Path) -> None:
    from helpers import run_python, write

    script = write(
        tmp_path / "leave.py",
        """
        import asyncio, os
        from openflash import CpuLiveServerless, remote

        @remote(CpuLiveServerless(name="leave", workersMin=2, workersMax=2))
        def pid():
            return os.getpid()

        print(asyncio.run(pid()))
    """,
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("worker outlived its caller")
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr


def test_pickled_errors_keep_their_types() -> None:
    error = WorkerCrashedError("x", exit_code=1)
    assert type(pickle.loads(pickle.dumps(error))) is WorkerCrashedError
