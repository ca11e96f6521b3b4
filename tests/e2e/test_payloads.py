"""Large values through real workers: numpy arrays and memoryviews as out-of-band buffers.

The endpoint's environment holds numpy (from the test uv cache), as this test's interpreter does;
its arguments and results travel as pickle protocol 5 buffers, written from the caller's own
memory and read into one buffer allocated once (workers/protocol.py).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest

from openflash import CpuLiveServerless, remote

from helpers import run_python


@pytest.mark.usefixtures("flash_home")
@pytest.mark.parametrize("shared", ["default", "1K"])
def test_arrays_of_several_dtypes_and_a_memoryview_round_trip_exactly(
    shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1K: the call goes through shared memory (workers/shared_memory.py); by default (64 MiB),
    # through the socket.
    if shared != "default":
        monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", shared)

    @remote(CpuLiveServerless(name=f"payloads-dtypes-{shared}"), dependencies=["numpy==2.1.3"])
    def echo(arrays, view, scale):
        import numpy

        doubled = {k: (a * scale if a.dtype.kind in "iuf" else a) for k, a in arrays.items()}
        checks = {k: (str(a.dtype), a.shape, bool(a.flags.c_contiguous)) for k, a in arrays.items()}
        with open("/proc/self/maps") as maps:
            checks["shared"] = "memfd:openflash-payload" in maps.read()
        return doubled, view, memoryview(numpy.arange(6000, dtype=numpy.int16)), checks

    rng = np.random.default_rng(25)
    arrays = {
        "float64": rng.standard_normal((300, 200)),
        "float32": rng.standard_normal(50_000).astype(np.float32),
        "int8": rng.integers(-128, 127, 70_000, dtype=np.int8),
        "uint64": rng.integers(0, 2**63, 9_000, dtype=np.uint64),
        "complex128": (rng.standard_normal(5000) + 1j * rng.standard_normal(5000)),
        "bool": rng.integers(0, 2, 40_000).astype(bool),
        "fortran": np.asfortranarray(rng.standard_normal((120, 90))),
        "strided": rng.standard_normal((400, 100))[:, ::3],
        "small": np.array([1, 2, 3], dtype=np.int32),
    }
    view = memoryview(np.arange(20_000, dtype=np.float64)).cast("B").cast("d", (100, 200))

    doubled, back, made, checks = asyncio.run(echo(arrays, view, 2))

    for name, array in arrays.items():
        expected = array * 2 if array.dtype.kind in "iuf" else array
        assert doubled[name].dtype == array.dtype, name
        assert doubled[name].shape == array.shape, name
        assert np.array_equal(doubled[name], expected), name
        assert checks[name][:2] == (str(array.dtype), array.shape), name
    assert back.format == "d" and back.shape == (100, 200) and back.tolist() == view.tolist()
    assert made.format == "h" and made.tolist() == list(range(6000))
    assert checks["shared"] is (shared != "default")


@pytest.mark.usefixtures("flash_home")
@pytest.mark.parametrize("shared", ["0", "1M"])
def test_a_payload_larger_than_the_socket_buffer_round_trips(
    shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", shared)  # 0: through the socket alone

    @remote(CpuLiveServerless(name=f"payloads-large-{shared}"), dependencies=["numpy==2.1.3"])
    def negate(array):
        return -array, int(array.nbytes), float(array[8_345_678])

    array = np.arange(8 << 20, dtype=np.float64)  # 64 MiB
    negated, size, probe = asyncio.run(negate(array))
    assert size == array.nbytes and probe == 8_345_678.0
    assert negated.dtype == np.float64 and np.array_equal(negated, -array)
    assert negated.flags.writeable  # read into a buffer of its own, not a read-only bytes


def result_mappings() -> int:
    """This process's mappings of results' shared memory (workers/shared_memory.py)."""
    with open("/proc/self/maps") as maps:
        return sum("memfd:openflash-result" in line for line in maps)


@pytest.mark.usefixtures("flash_home")
@pytest.mark.parametrize("shared", ["1M", "0"])
def test_large_results_come_back_exactly_and_their_memory_lives_with_their_arrays(
    shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1M: results of 1 MiB or more come back in shared memory; 0: through the socket.
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", shared)

    @remote(CpuLiveServerless(name=f"payloads-results-{shared}"), dependencies=["numpy==2.1.3"])
    def make(seed, only_bytes=False):
        import hashlib

        import numpy

        rng = numpy.random.default_rng(seed)
        if only_bytes:
            return rng.bytes(3_000_000)
        values = {
            "float64": rng.standard_normal(300_000),
            "int16": rng.integers(-(2**15), 2**15, (700, 900), dtype=numpy.int16),
            "complex64": (rng.standard_normal(200_000) * 1j).astype(numpy.complex64),
            "uint8": rng.integers(0, 256, 2_000_000, dtype=numpy.uint8),
            "fortran": numpy.asfortranarray(rng.standard_normal((500, 400))),
            "strided": rng.standard_normal((1000, 600))[:, ::3],
            "bytes": rng.bytes(1_500_000),
            "view": memoryview(rng.standard_normal(200_000)),
        }
        digests = {
            k: hashlib.sha256(v if isinstance(v, bytes) else numpy.asarray(v).tobytes()).hexdigest()
            for k, v in values.items()
        }
        return values, digests

    def digest(value: object) -> str:
        raw = value if isinstance(value, bytes) else np.asarray(value).tobytes()
        return hashlib.sha256(raw).hexdigest()

    async def calls() -> tuple[dict[str, object], int, int, int]:
        values, digests = await make(25)
        kinds = {k: (type(v).__name__, getattr(v, "dtype", None)) for k, v in values.items()}
        assert {k: digest(v) for k, v in values.items()} == digests, kinds
        held = result_mappings()  # while the arrays live
        shapes = {k: np.asarray(v).shape for k, v in values.items() if k != "bytes"}
        del values
        # (asyncio keeps the reply until this task's step ends: the next await)
        await asyncio.sleep(0)
        arrays_gone = result_mappings()
        data = await make(25, only_bytes=True)  # a copy: its shared memory goes at once
        assert len(data) == 3_000_000
        return shapes, held, arrays_gone, result_mappings()

    shapes, held, arrays_gone, after_bytes = asyncio.run(calls())
    assert shapes["strided"] == (1000, 200) and shapes["int16"] == (700, 900)
    assert (held >= 1) is (shared == "1M")  # mapped while the arrays live, or not at all
    assert arrays_gone == 0 and after_bytes == 0


NESTED_APP = """
import asyncio
import sys

from openflash import CpuLiveServerless, remote


@remote(CpuLiveServerless(name="inner", executionTimeoutMs=120000))
def inner(n):
    return b"x" * n


@remote(CpuLiveServerless(name="outer", executionTimeoutMs=120000))
async def outer(n):
    data = await inner(n)
    return len(data), data == b"x" * n


print(*asyncio.run(asyncio.wait_for(outer(int(sys.argv[1])), 100)))
"""


@pytest.mark.usefixtures("flash_home")
@pytest.mark.parametrize(("size", "shared"), [(100_000, "default"), (3_000_000, "1M")])
def test_a_large_result_of_a_nested_call_reaches_the_worker_that_made_it(
    tmp_path: Path, size: int, shared: str
) -> None:
    # 100 KB: read into a buffer of its own (a frame of 64 KiB or more); 3 MB with
    # FLASH_SHARED_MEMORY_MIN=1M: mapped from shared memory. Either reply used to be dropped
    # unsent (a mapping does not pickle) and the outer call waited until its timeout.
    app = tmp_path / "project" / "app.py"
    app.parent.mkdir()
    app.write_text(NESTED_APP)
    env = {} if shared == "default" else {"FLASH_SHARED_MEMORY_MIN": shared}
    done = run_python(app, str(size), env=env, timeout=300)
    assert done.stdout.split() == [str(size), "True"], done.stderr[-3000:]
