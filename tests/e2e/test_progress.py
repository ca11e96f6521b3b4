"""Progress of plain calls from Python (openflash.on_progress), and Runpod's progress_update
shape inside workers (the worker runtime's runpod shim). Real worker processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import openflash
from openflash import CpuLiveServerless, FlashError, RemoteError, remote

pytestmark = pytest.mark.usefixtures("flash_home")


@remote(CpuLiveServerless(name="progress-plain"))
def train(epochs: int) -> str:
    import openflash

    for epoch in range(epochs):
        openflash.progress({"epoch": epoch, "of": epochs})
    return "trained"


@remote(CpuLiveServerless(name="progress-runpod"))
def runpod_handler(job: dict) -> str:
    import runpod  # the worker runtime's shim: this environment does not declare runpod

    runpod.serverless.progress_update(job, "half way")
    runpod.serverless.progress_update(job, "almost")
    try:
        runpod.serverless.start({"handler": print})
    except AttributeError as e:
        return str(e)
    return "start was offered"


def test_on_progress_sees_a_plain_calls_progress_in_order() -> None:
    seen: list[object] = []

    async def main() -> tuple[str, openflash.api.progress.ProgressWatch]:
        with openflash.on_progress(seen.append) as watch:
            result = await train(3)
        return result, watch

    result, watch = asyncio.run(main())
    assert result == "trained"
    expected = [{"epoch": 0, "of": 3}, {"epoch": 1, "of": 3}, {"epoch": 2, "of": 3}]
    assert seen == expected
    assert watch.updates == expected
    assert watch.progress == {"epoch": 2, "of": 3}


def test_on_progress_without_a_callback_nested_blocks_and_calls_outside() -> None:
    async def main() -> tuple[object, object, list[object]]:
        with openflash.on_progress() as outer:
            with openflash.on_progress() as inner:
                pending = train(2)  # started in the inner block, awaited after it
            await pending
        with openflash.on_progress() as unrelated:
            pass
        await train(1)  # started outside any block: reports to none
        return outer.progress, inner.progress, unrelated.updates

    assert asyncio.run(main()) == ({"epoch": 1, "of": 2}, {"epoch": 1, "of": 2}, [])


def test_a_raising_callback_does_not_fail_the_call() -> None:
    def broken(value: object) -> None:
        raise ValueError("bad callback")

    async def main() -> str:
        with openflash.on_progress(broken):
            return await train(2)

    assert asyncio.run(main()) == "trained"


def test_runpods_progress_update_reaches_the_caller_and_nothing_else_is_faked() -> None:
    async def main() -> tuple[str, list[object]]:
        with openflash.on_progress() as watch:
            message = await runpod_handler({"id": "job-1", "input": {}})
        return message, watch.updates

    message, updates = asyncio.run(main())
    assert updates == ["half way", "almost"]
    assert "runpod.serverless.start is not offered inside openflash workers" in message
    assert "add 'runpod' to the endpoint's dependencies" in message


def test_a_runpod_package_of_the_environment_wins_over_the_shim(tmp_path: Path) -> None:
    # A "runpod" the endpoint's environment provides (here through its PYTHONPATH) is the one
    # imported: the shim is last on the worker's path.
    package = tmp_path / "site" / "runpod"
    (package / "serverless").mkdir(parents=True)
    (package / "__init__.py").write_text("from runpod import serverless\nREAL = True\n")
    (package / "serverless" / "__init__.py").write_text(
        "def progress_update(job, value):\n    raise RuntimeError('the real one: ' + value)\n"
    )

    @remote(CpuLiveServerless(name="progress-own-runpod", env={"PYTHONPATH": str(package.parent)}))
    def own(job: dict) -> bool:
        import runpod

        try:
            runpod.serverless.progress_update(job, "x")
        except RuntimeError as e:
            return runpod.REAL and str(e) == "the real one: x"
        return False

    assert asyncio.run(own({"id": "j"})) is True


@remote(CpuLiveServerless(name="progress-in-worker"))
async def watches_inside() -> str:
    import openflash

    with openflash.on_progress():
        return "no error"


def test_on_progress_inside_a_worker_says_it_is_not_relayed() -> None:
    with pytest.raises(RemoteError, match="the progress of nested calls is not relayed"):
        asyncio.run(watches_inside())
    assert issubclass(RemoteError, FlashError)
