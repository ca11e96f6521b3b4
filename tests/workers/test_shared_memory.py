"""Large calls to a worker on this machine through a memfd (workers/shared_memory.py): the
values arrive exactly, and a worker killed with one in flight leaves nothing behind (no file in
/dev/shm, no descriptor in the caller, no memfd anywhere). Real workers in a bare environment."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import signal
import socket
import sys
import types
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from tests.workers.test_pool import getpid, result, run, wait_until

from openflash.backends.local import LocalBackend, worker_environ
from openflash.backends.ray_handles import _FrameWriter as RayFrameWriter
from openflash.backends.targets import LocalTarget
from openflash.deps.namespace_mode import layer_mode
from openflash.errors import ConfigError, WorkerCrashedError
from openflash.workers import protocol, shared_memory
from openflash.workers.calls import Call
from openflash.workers.pool import Pool, PoolConfig
from openflash.workers.port import WorkerSpec

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MEMFD = "memfd:openflash-payload"


def call_of(fn: Any, *args: Any) -> Call:
    blob = cloudpickle.dumps(fn)
    return Call(
        protocol.OP_FUNCTION,
        f"{fn.__name__}-{hash(blob)}",
        blob,
        cloudpickle.dumps((args, {})),
        label=f"{fn.__name__}()",
        source=__file__,
    )


def inspect_argument(data: bytes, more: bytearray) -> tuple[bool, int, bytes, bytes]:
    """Whether this call's payload is mapped from a memfd, and the values back."""
    with open("/proc/self/maps") as maps:
        mapped = "memfd:openflash-payload" in maps.read()
    return mapped, os.getpid(), data, bytes(more)


def argument_mapped(data: bytes, more: bytearray) -> tuple[bool, int, None, None]:
    """Whether this call's payload is mapped from a memfd; a small result (whose own shared
    memory, for a large one, would be counted among the caller's descriptors)."""
    mapped, pid, _, _ = inspect_argument(data, more)
    return mapped, pid, None, None


def memfds_anywhere() -> list[str]:
    """Every descriptor of a memfd of ours, in every process this user can see."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:  # closed meanwhile (the listing's own descriptor)
                continue
            if MEMFD in link:
                found.append(f"{fd}: {link}")
    return found


@pytest.mark.parametrize("minimum", ["1M", "0"])
def test_a_large_call_goes_through_shared_memory_and_arrives_exactly(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch, minimum: str
) -> None:
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", minimum)
    data = os.urandom(3 << 20)
    more = bytearray(os.urandom(1 << 20))

    async def body(pool: Pool) -> tuple[bool, bool, bytes, bytes]:
        small, _, _, _ = await result(pool, call_of(inspect_argument, b"x", bytearray()))
        mapped, _, back, back_more = await result(pool, call_of(inspect_argument, data, more))
        return small, mapped, back, back_more

    small, mapped, back, back_more = run(bare_spec, PoolConfig("p"), body)
    assert not small  # small calls never
    assert mapped is (minimum != "0")  # through a memfd, or the socket when turned off
    assert back == data and back_more == more
    assert not memfds_anywhere()


def test_a_worker_killed_with_shared_memory_in_flight_leaves_nothing_behind(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", "1M")
    shm_before = sorted(os.listdir("/dev/shm"))

    def descriptors() -> list[str]:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:  # the listing's own descriptor, closed since
                continue
        return sorted(links)

    async def body(pool: Pool) -> tuple[list[str], list[str], BaseException]:
        mapped, pid, _, _ = await result(pool, call_of(argument_mapped, os.urandom(2 << 20), b""))
        assert mapped  # large calls to this worker go through shared memory
        warm = len(descriptors())
        os.kill(pid, signal.SIGSTOP)  # it reads nothing now: the frame stays in its socket
        await wait_until(lambda: "State:\tT" in Path(f"/proc/{pid}/status").read_text())
        # (The stopped worker may still map the first call's file, if it had not let go of its
        # arguments when it was stopped.)
        held = memfds_anywhere()
        sending = asyncio.ensure_future(
            result(pool, call_of(argument_mapped, os.urandom(4 << 20), bytearray()))
        )
        await asyncio.sleep(0.3)
        assert not sending.done()
        in_flight = memfds_anywhere()  # sent: nobody holds it but the socket
        assert in_flight == held, (in_flight, held)
        os.kill(pid, signal.SIGKILL)
        try:
            await sending
        except WorkerCrashedError as e:
            error: BaseException = e
        # A new worker for the next call: the caller holds as many descriptors as when warm.
        _, again, _, _ = await result(pool, call_of(argument_mapped, b"", bytearray()))
        assert again != pid
        left = descriptors()
        assert len(left) == warm, left
        return left, memfds_anywhere(), error

    left, anywhere, error = run(bare_spec, PoolConfig("p"), body)
    assert isinstance(error, WorkerCrashedError) and error.signal == signal.SIGKILL
    assert anywhere == []
    assert not [link for link in left if MEMFD in link]
    assert sorted(os.listdir("/dev/shm")) == shm_before


def test_a_bad_shared_memory_size_is_refused_naming_it(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", "lots")
    with pytest.raises(ConfigError) as info:
        run(bare_spec, PoolConfig("p"), lambda pool: asyncio.sleep(0))
    assert "FLASH_SHARED_MEMORY_MIN='lots' is not a size" in str(info.value)


def test_frames_to_workers_not_on_a_local_socket_go_the_usual_way(tmp_path: Path) -> None:
    frame = protocol.encode_call(
        1,
        protocol.CallPayload("fn", "t", None, "", protocol.Packed(os.urandom(2 << 20)), None),
    )

    async def over_a_pipe() -> bool:
        read_end, write_end = os.pipe()
        loop = asyncio.get_running_loop()
        transport, flow = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(write_end, "wb", buffering=0)
        )
        writer = asyncio.StreamWriter(transport, flow, None, loop)  # type: ignore[arg-type]
        try:
            return shared_memory.send(writer, frame, 1)
        finally:
            transport.close()
            os.close(read_end)

    assert len(frame) > 1
    assert not asyncio.run(over_a_pipe())  # a container's stdin
    ray_like = RayFrameWriter.__new__(RayFrameWriter)  # a Ray worker's writer: no transport
    assert not shared_memory.send(ray_like, frame, 1)  # type: ignore[arg-type]


# Results through shared memory.

RESULT_MEMFD = "memfd:openflash-result"


def held_results() -> tuple[list[str], list[str]]:
    """This process's descriptors and mappings of result files (shared_memory.RESULT_NAME)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the listing's own descriptor, closed since
            continue
    with open("/proc/self/maps") as maps:
        mapped = [line for line in maps if RESULT_MEMFD in line]
    return [link for link in links if RESULT_MEMFD in link], mapped


def blob_of(size: int) -> tuple[bytes, memoryview, bytes]:
    """Seeded bytes of ``size``: as bytes (in the pickle), a memoryview (out of band, 2-D), and a
    slice of every other byte (not contiguous: sent as a copy)."""
    import random

    data = random.Random(size).randbytes(size)
    view = memoryview(bytearray(data)).cast("B", (2, size // 2))
    return data, view, bytes(memoryview(data)[::2])


def namespaces_of() -> tuple[str, str]:
    return os.readlink("/proc/self/ns/user"), os.readlink("/proc/self/ns/pid")


def sized_result(size: int) -> memoryview:
    return memoryview(bytearray(size))


@pytest.mark.parametrize("worker", ["spawned", "forked", "namespace"])
def test_a_large_result_comes_back_through_shared_memory_exactly(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch, worker: str, tmp_path: Path
) -> None:
    if worker == "namespace" and not layer_mode().namespaces:
        pytest.skip("this kernel refuses unprivileged namespaces")
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", "1M")
    size = 3 << 20
    # A volume puts the worker in its user, mount and PID namespaces (backends/local.py).
    spec = dataclasses.replace(bare_spec, volume=tmp_path / "volume")
    backend = LocalBackend(fork=worker == "forked", registry=tmp_path / "templates")

    async def body() -> tuple[Any, Any, tuple[list[str], list[str]], tuple[str, Any]]:
        spec_used = spec if worker == "namespace" else bare_spec
        if worker == "forked":  # the first worker is spawned, its template started beside it
            first = Pool(PoolConfig("first"), backend, spec_used)
            await result(first, call_of(getpid))
            await first.close()
        pool = Pool(PoolConfig("p"), backend, spec_used)
        try:
            reply = await pool.submit(call_of(blob_of, size))
            assert reply.ok
            started = pool.workers[0].handle.started  # type: ignore[union-attr]
            namespaces = await result(pool, call_of(namespaces_of))
            while_held = held_results()  # the reply's payload maps the file
            data, view, strided = protocol.loads(reply.payload)
            del reply
            return (data, view, strided), while_held, held_results(), (started, namespaces)
        finally:
            await pool.close()
            await backend.close()

    (data, view, strided), while_held, loaded, (started, namespaces) = asyncio.run(body())
    assert started == ("forked" if worker == "forked" else "spawned")
    assert (namespaces != namespaces_of()) is (worker == "namespace")  # its own user and PID ones
    expected, expected_view, expected_strided = blob_of(size)
    assert data == expected and strided == expected_strided
    assert view.shape == (2, size // 2) and view.tobytes() == expected_view.tobytes()
    fds, maps = while_held
    assert len(maps) >= 1 and len(fds) == 1  # one file, mapped (the mapping holds a dup)
    assert loaded[1], "the memoryview shares the mapping: it stays while the view lives"
    del view
    assert held_results() == ([], [])
    assert not memfds_anywhere()


def test_a_result_just_under_the_size_takes_the_socket(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def payload_size(pool: Pool) -> int:
        reply = await pool.submit(call_of(sized_result, 2 << 20))
        return len(reply.payload)

    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", "0")  # the socket alone: the frame's size
    size = run(bare_spec, PoolConfig("p"), payload_size)

    async def through(pool: Pool) -> tuple[int, bool]:
        reply = await pool.submit(call_of(sized_result, 2 << 20))
        mapped = bool(held_results()[1])
        return len(reply.payload), mapped

    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", str(size))
    assert run(bare_spec, PoolConfig("p"), through) == (size, True)
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", str(size + 1))
    assert run(bare_spec, PoolConfig("p"), through) == (size, False)


def big_result_then_killed(size: int) -> memoryview:
    """A large result; the worker SIGKILLs itself as soon as the file for it exists (while it
    is written, before its frame is sent)."""
    import threading

    def watch() -> None:
        while True:
            for fd in os.listdir("/proc/self/fd"):
                try:
                    if "memfd:openflash-result" in os.readlink(f"/proc/self/fd/{fd}"):
                        os.kill(os.getpid(), signal.SIGKILL)
                except OSError:
                    continue

    threading.Thread(target=watch, daemon=True).start()
    return memoryview(bytearray(size))


def test_a_worker_killed_while_writing_a_large_result_leaves_nothing_in_the_caller(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", "1M")

    async def body(pool: Pool) -> list[Any]:
        outcomes: list[Any] = []
        for _ in range(3):  # the watcher may come late, after the frame left (then it arrives)
            try:
                reply = await pool.submit(call_of(big_result_then_killed, 256 << 20))
            except WorkerCrashedError as e:
                outcomes.append(e)
                break
            outcomes.append(len(reply.payload))
            del reply
        outcomes.append(held_results())
        return outcomes

    *results, held = run(bare_spec, PoolConfig("p"), body)
    assert isinstance(results[-1], WorkerCrashedError), results
    assert results[-1].signal == signal.SIGKILL
    assert held == ([], [])
    assert not memfds_anywhere()


def test_a_descriptor_no_frame_takes_is_closed_with_the_socket() -> None:
    async def body() -> tuple[bool, bool]:
        ours, theirs = socket.socketpair()
        receiving = shared_memory.Receiving.of(ours)
        reader, writer = await asyncio.open_unix_connection(sock=receiving)
        fd = os.memfd_create("openflash-result")
        socket.send_fds(theirs, [b"x"], [fd])  # a byte, not a frame: nothing takes it
        os.close(fd)
        await reader.readexactly(1)
        held = any(RESULT_MEMFD in link for link in held_results()[0])
        writer.close()
        await writer.wait_closed()
        theirs.close()
        return held, any(RESULT_MEMFD in link for link in held_results()[0])

    held, after = asyncio.run(body())
    assert held and not after


def test_a_result_file_that_is_not_sealed_or_missing_is_refused() -> None:
    header = protocol.encode(protocol.RESULT, 7, shared_memory.MARK + (10).to_bytes(8, "big"))
    frame = protocol.Frame(protocol.RESULT, 7, header[protocol.HEADER.size :])

    handle = types.SimpleNamespace(descriptors=collections.deque())
    no_file = shared_memory.received(frame, handle)
    fd = os.memfd_create("openflash-result")
    os.write(fd, b"0123456789")
    handle.descriptors.append(fd)
    unsealed = shared_memory.received(frame, handle)
    for refused, why in [(no_file, "no file came with it"), (unsealed, "not sealed")]:
        assert refused.kind == protocol.ERROR and refused.call_id == 7
        assert why in protocol.decode_error(refused.payload)["message"]
    assert held_results() == ([], [])  # the descriptor was closed
    assert shared_memory.received(protocol.Frame(protocol.RESULT, 7, b"\x80x"), handle).kind == 3


def test_workers_off_this_process_socket_are_not_told_to_send_results_in_memory(
    bare_spec: WorkerSpec,
) -> None:
    # A Ray actor starts its worker with worker_environ's variables (backends/ray_worker.py)
    # and reads it with a plain asyncio transport, which would drop the descriptor: only the
    # local backend, which reads with shared_memory.Receiving, adds the variable.
    assert isinstance(bare_spec.target, LocalTarget)
    env = worker_environ(bare_spec, bare_spec.target, (), False)
    assert shared_memory.RESULTS_VARIABLE not in env


class _LoopOfAnotherKind(asyncio.AbstractEventLoop):
    """Stands in for uvloop (not installed here), whose transports read the descriptor
    themselves: what comes with the bytes is dropped."""


def test_a_loop_that_drops_descriptors_gets_its_large_results_through_the_socket(
    bare_spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.new_event_loop()
    try:
        assert shared_memory.receivable(loop)
    finally:
        loop.close()
    assert not shared_memory.receivable(_LoopOfAnotherKind())
    # A pool on such a loop (flash run under uvicorn with uvloop): the worker is not told to
    # send results in memory, so a large one comes through the socket, whole.
    monkeypatch.setattr(shared_memory, "receivable", lambda loop: False)
    monkeypatch.setenv("FLASH_SHARED_MEMORY_MIN", "1M")

    async def through(pool: Pool) -> tuple[bytes, bool]:
        reply = await pool.submit(call_of(blob_of, 3 << 20))
        mapped = bool(held_results()[1])
        data, _, _ = protocol.loads(reply.payload)
        return data, mapped

    data, mapped = run(bare_spec, PoolConfig("p"), through)
    assert not mapped and data == blob_of(3 << 20)[0]
