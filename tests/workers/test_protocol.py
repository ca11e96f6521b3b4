from __future__ import annotations

import asyncio
import os
import pickle
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
    frame = b"".join(protocol.encode_call(7, call))
    kind, call_id, _size = protocol.HEADER.unpack(frame[: protocol.HEADER.size])
    assert (kind, call_id) == (protocol.CALL, 7)
    assert protocol.decode_call(frame[protocol.HEADER.size :]) == call
    error = protocol.encode_error(
        3, type_name="ValueError", message="m", traceback="tb", exception=None, missing_module=None
    )
    info = protocol.decode_error(error[protocol.HEADER.size :])
    assert info["type"] == "ValueError" and info["traceback"] == "tb"


def _over_a_socket(parts: list[protocol.Buffer]) -> protocol.Frame | None:
    """``parts`` written by one side of a real socketpair, read back as a frame by the other."""

    async def main() -> protocol.Frame | None:
        a, b = socket.socketpair()
        _, writer = await asyncio.open_unix_connection(sock=a)
        reader, _ = await asyncio.open_unix_connection(sock=b)
        protocol.write_parts(writer, parts)
        frame = await protocol.read_frame(reader)
        writer.close()
        return frame

    return asyncio.run(main())


class _Exported:
    """An object that exports its memory out of band (as numpy arrays do), without numpy."""

    def __init__(self, data: bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: object) -> object:
        return _Exported, (pickle.PickleBuffer(self.data),)


def test_out_of_band_buffers_travel_as_separate_parts_and_round_trip_exactly() -> None:
    import array

    doubles = array.array("d", [i / 7 for i in range(5000)])
    matrix = memoryview(bytearray(range(256)) * 64).cast("B").cast("H", (64, 128))
    exported = _Exported(bytearray(b"\x01\x02\x03") * 10000)
    value = (memoryview(doubles), matrix, exported, bytearray(b"z" * 40000), b"small", "text")
    packed = protocol.pack(value)
    # Each large buffer out of band (the bytearray is copied into the pickle: picklers never
    # let it out of band), none copied into the pickle.
    assert len(packed.buffers) == 3
    parts = protocol.encode_packed(protocol.RESULT, 9, packed)
    # The pickle and the buffers are written as they are: views, not copies joined together.
    assert sum(isinstance(p, memoryview) for p in parts) == 4
    frame = _over_a_socket(parts)
    assert frame is not None and (frame.kind, frame.call_id) == (protocol.RESULT, 9)
    view, grid, back, raw, small, text = protocol.loads(frame.payload)
    assert view.format == "d" and view.tolist() == doubles.tolist()
    assert grid.format == "H" and grid.shape == (64, 128) and grid.tolist() == matrix.tolist()
    assert isinstance(back, _Exported) and bytes(back.data) == bytes(exported.data)
    assert type(raw) is bytearray and raw == bytearray(b"z" * 40000)
    assert (small, text) == (b"small", "text")


def test_a_readonly_or_strided_memoryview_round_trips() -> None:
    data = bytes(range(200)) * 100
    strided = memoryview(bytearray(data))[::3]
    readonly = memoryview(data)
    got_strided, got_readonly = protocol.loads(
        b"".join(protocol.encode_packed(protocol.RESULT, 1, protocol.pack((strided, readonly))))[
            protocol.HEADER.size :
        ]
    )
    assert got_strided.tolist() == strided.tolist()
    assert got_readonly.readonly and bytes(got_readonly) == data


def test_a_call_s_arguments_travel_out_of_band_inside_the_call_frame() -> None:
    args = protocol.pack(((bytearray(b"a" * 50000),), {"k": memoryview(b"b" * 30000)}))
    call = protocol.CallPayload("fn", "t1", None, "", args, None)
    parts = protocol.encode_call(3, call)
    # The arguments' pickle and their buffer go as parts of their own, not pickled again.
    sizes = sorted(p.nbytes for p in parts if isinstance(p, memoryview))
    assert sizes == sorted([memoryview(args.data).nbytes, 30000])
    frame = _over_a_socket(parts)
    assert frame is not None
    decoded = protocol.decode_call(frame.payload)
    assert isinstance(decoded.args, protocol.Packed)
    (first,), kwargs = decoded.args.load()
    assert first == bytearray(b"a" * 50000) and bytes(kwargs["k"]) == b"b" * 30000


def test_a_payload_larger_than_the_socket_buffer_round_trips() -> None:
    a, b = socket.socketpair()
    limit = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    a.close()
    b.close()
    big = bytearray(os.urandom(1 << 16)) * 1024  # 64 MiB
    assert len(big) > 8 * limit
    frame = _over_a_socket(protocol.encode_packed(protocol.RESULT, 5, protocol.pack(big)))
    assert frame is not None and not isinstance(frame.payload, bytes)  # read into one buffer
    assert protocol.loads(frame.payload) == big


def test_a_large_frame_cut_short_reads_as_closed() -> None:
    async def main() -> protocol.Frame | None:
        a, b = socket.socketpair()
        _, writer = await asyncio.open_unix_connection(sock=a)
        reader, _ = await asyncio.open_unix_connection(sock=b)
        writer.write(protocol.HEADER.pack(protocol.RESULT, 1, 4 << 20) + b"x" * (300 << 10))
        await writer.drain()
        writer.close()  # the other side dies a third of the way through the payload
        return await asyncio.wait_for(protocol.read_frame(reader), 30)

    assert asyncio.run(main()) is None


def test_a_call_with_small_arguments_is_one_plain_frame() -> None:
    args = protocol.pack(((1, "two"), {"three": 3.0}))
    parts = protocol.encode_call(4, protocol.CallPayload("fn", "t1", None, "", args, None))
    assert len(parts) == 1 and parts[0][protocol.HEADER.size] == pickle.PROTO[0]
    frame = _over_a_socket(parts)
    assert frame is not None and frame.call_id == 4
    decoded = protocol.decode_call(frame.payload)
    assert protocol.packed(decoded.args).load() == ((1, "two"), {"three": 3.0})
