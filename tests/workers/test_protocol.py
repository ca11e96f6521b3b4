from __future__ import annotations

import asyncio
import socket

from openflash.workers import protocol


def test_frames_round_trip_over_a_real_socket() -> None:
    async def main() -> list[protocol.Frame | None]:
        a, b = socket.socketpair()
        _, writer = await asyncio.open_unix_connection(sock=a)
        reader, _ = await asyncio.open_unix_connection(sock=b)
        big = bytes(range(256)) * 4096
        writer.write(protocol.encode(protocol.READY, 0, b"hi"))
        writer.write(protocol.encode(protocol.RESULT, 2**40, big))
        writer.write(protocol.encode(protocol.SHUTDOWN))
        frames = [await protocol.read_frame(reader) for _ in range(3)]
        writer.close()
        frames.append(await protocol.read_frame(reader))
        return frames

    ready, result, shutdown, eof = asyncio.run(main())
    assert ready == protocol.Frame(protocol.READY, 0, b"hi")
    assert result is not None and result.call_id == 2**40 and len(result.payload) == 256 * 4096
    assert shutdown == protocol.Frame(protocol.SHUTDOWN, 0, b"")
    assert eof is None


def test_truncated_frame_reads_as_closed() -> None:
    async def main() -> protocol.Frame | None:
        reader = asyncio.StreamReader()
        reader.feed_data(protocol.encode(protocol.RESULT, 1, b"abcdef")[:-2])
        reader.feed_eof()
        return await protocol.read_frame(reader)

    assert asyncio.run(main()) is None


def test_call_and_error_payloads_round_trip() -> None:
    call = protocol.CallPayload("fn", "t1", b"blob", "", b"args", None, "/x.py")
    frame = protocol.encode_call(7, call)
    kind, call_id, _size = protocol.HEADER.unpack(frame[: protocol.HEADER.size])
    assert (kind, call_id) == (protocol.CALL, 7)
    assert protocol.decode_call(frame[protocol.HEADER.size :]) == call
    error = protocol.encode_error(
        3, type_name="ValueError", message="m", traceback="tb", exception=None, missing_module=None
    )
    info = protocol.decode_error(error[protocol.HEADER.size :])
    assert info["type"] == "ValueError" and info["traceback"] == "tb"
