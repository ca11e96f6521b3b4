"""A corrupt frame header (one announcing an absurd payload length): the reader raises a clear
protocol error instead of trying to allocate it, and a worker that sends one is killed and its
calls fail with WorkerCrashedError naming it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from openflash import CpuLiveServerless, WorkerCrashedError, remote
from openflash.workers import protocol

Report = Callable[[str, str, str], None]

ABSURD = [2**64 - 1, 2**63, 2**45, protocol.MAX_FRAME + 1]


@pytest.mark.parametrize("size", ABSURD)
def test_a_header_announcing_an_absurd_length_is_a_protocol_error(size: int) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        theirs.sendall(protocol.HEADER.pack(protocol.RESULT, 7, size) + b"junk")
        try:
            with pytest.raises(protocol.FrameError, match=f"announces {size} bytes"):
                await asyncio.wait_for(protocol.read_frame(reader), 30)
        finally:
            writer.close()
            theirs.close()

    asyncio.run(main())


@remote(CpuLiveServerless(name="corrupt-frames"))
def send_corrupt_header(size: int) -> str:
    import os
    import socket
    import stat
    import struct

    if size < 0:
        return f"answered by {os.getpid()}"
    header = struct.pack("!BQQ", 3, 1, size)  # a RESULT frame header announcing ``size`` bytes
    for fd in range(3, 256):
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with sock:
            if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
                sock.sendall(header)  # on the worker's own socket to its pool
    return "not reached: the pool reads the header first"


@pytest.mark.usefixtures("flash_home")
def test_a_worker_that_sends_a_corrupt_frame_is_killed_and_named(report: Report) -> None:
    async def main() -> tuple[BaseException, str]:
        with pytest.raises(WorkerCrashedError) as info:
            await asyncio.wait_for(send_corrupt_header(2**63), 120)
        return info.value, await asyncio.wait_for(send_corrupt_header(-1), 120)

    error, after = asyncio.run(main())
    assert after.startswith("answered by "), after  # the endpoint answers on a new worker
    message = str(error)
    assert "the worker of endpoint 'corrupt-frames' (pid " in message, message
    assert "cannot read as a frame" in message and f"announces {2**63} bytes" in message
    assert "while running send_corrupt_header()" in message, message
    report(
        "workers",
        "a worker writing a frame header announcing 2**63 bytes on its socket to the pool",
        "the pool raised no allocation error: the worker was killed and its call failed with "
        "WorkerCrashedError naming the endpoint, the pid and the corrupt frame; the next call "
        "answered on a new worker",
    )
