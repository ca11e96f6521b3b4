"""workers/replies.py: replies taken as the transport delivers them, every other frame left to
the reader task in the order sent. The transport is the stand-in here: bytes are handed to a real
``asyncio.StreamReader`` the way its protocol's ``data_received`` hands them."""

from __future__ import annotations

import asyncio
import socket

from openflash.workers import payloads, protocol
from openflash.workers.protocol import Frame
from openflash.workers.replies import ReplyTap

RESULT, ERROR, NESTED = protocol.RESULT, protocol.ERROR, protocol.NESTED


def test_a_reply_is_taken_during_feed_and_later_frames_keep_their_order() -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        taken: list[Frame] = []
        tap = ReplyTap(reader, taken.append)
        task = asyncio.ensure_future(tap.read())
        await asyncio.sleep(0)  # the reader task waits for a header
        reader.feed_data(
            protocol.encode(RESULT, 1, b"one")
            + protocol.encode(ERROR, 2, b"two")
            + protocol.encode(NESTED, 3, b"nested")
            + protocol.encode(RESULT, 4, b"four")
        )
        # Taken before any loop iteration: the reader task has not run.
        assert taken == [Frame(RESULT, 1, b"one"), Frame(ERROR, 2, b"two")]
        assert not task.done()
        assert await task == Frame(NESTED, 3, b"nested")
        assert await tap.read() == Frame(RESULT, 4, b"four")  # after the NESTED, via the reader
        assert len(taken) == 2

    asyncio.run(main())


def test_bytes_inside_a_frame_are_never_read_as_a_reply() -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        taken: list[Frame] = []
        tap = ReplyTap(reader, taken.append)
        inner = protocol.encode(RESULT, 9, b"looks like a reply")
        frame = protocol.encode(RESULT, 1, inner)
        task = asyncio.ensure_future(tap.read())
        await asyncio.sleep(0)
        reader.feed_data(frame[: protocol.HEADER.size])  # a header alone: the reader's
        for _ in range(3):
            await asyncio.sleep(0)  # the reader task takes the header, waits for the payload
        reader.feed_data(frame[protocol.HEADER.size :])  # a whole reply's bytes, mid-frame
        assert await asyncio.wait_for(task, 30) == Frame(RESULT, 1, inner)  # not stuck mid-frame
        assert taken == []

        split = protocol.encode(RESULT, 2, b"split")
        task = asyncio.ensure_future(tap.read())
        await asyncio.sleep(0)
        reader.feed_data(split[:5])  # incomplete: to the reader, and so is the rest
        reader.feed_data(split[5:])
        assert await task == Frame(RESULT, 2, b"split")
        assert taken == []

    asyncio.run(main())


def test_a_large_reply_goes_to_the_reader_over_a_real_socket() -> None:
    async def main() -> None:
        a, b = socket.socketpair()
        _, writer = await asyncio.open_unix_connection(sock=a)
        reader, _ = await asyncio.open_unix_connection(sock=b)
        taken: list[Frame] = []
        tap = ReplyTap(reader, taken.append)
        big = bytes(range(256)) * (payloads.PREALLOCATE // 256 + 1)
        task = asyncio.ensure_future(tap.read())
        await asyncio.sleep(0)  # the reader task waits for a header
        writer.write(protocol.encode(RESULT, 1, b"small"))
        writer.write(protocol.encode(RESULT, 2, big))
        frame = await task  # the small reply went by, delivered through data_received
        assert frame is not None and frame.call_id == 2 and bytes(frame.payload) == big
        assert taken == [Frame(RESULT, 1, b"small")]
        writer.close()
        assert await tap.read() is None

    asyncio.run(main())
