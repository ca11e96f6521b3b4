"""A worker's frames read from its socket (socket_reads.py): every frame that arrived together
from one ``recvmsg``, in order; large payloads among small frames; descriptors with the frame that
brought them (shared memory), others closed. Real socketpairs; the reads are counted by a socket
whose ``recvmsg_into`` counts its calls (the real one underneath)."""

from __future__ import annotations

import mmap
import os
import socket
import struct
import threading
from typing import Any

from openflash.workers import payloads, protocol, shared_memory
from openflash.workers.socket_reads import FrameReader


class CountingSocket(socket.socket):
    """A real socket that counts its ``recvmsg_into`` calls (each one system call)."""

    reads = 0

    def recvmsg_into(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return super().recvmsg_into(*args, **kwargs)


def pair() -> tuple[socket.socket, CountingSocket]:
    a, b = socket.socketpair()
    counted = CountingSocket(fileno=b.detach())
    return a, counted


def frames_of(reader: FrameReader, count: int) -> list[tuple[int, int, bytes]]:
    out = []
    for _ in range(count):
        frame = reader.next()
        assert frame is not None
        out.append((frame.kind, frame.call_id, bytes(frame.payload)))
    return out


def test_frames_that_arrived_together_are_read_with_one_recvmsg_in_order() -> None:
    a, b = pair()
    sent = [(protocol.CALL, i, os.urandom(i * 37)) for i in range(8)]
    sent.append((protocol.CANCEL, 3, b""))
    with a, b:
        a.sendall(b"".join(protocol.encode(*frame) for frame in sent))
        reader = FrameReader(b)
        assert frames_of(reader, len(sent)) == sent
        assert b.reads == 1
        assert not reader.ready()
        a.close()
        assert reader.next() is None


def test_a_large_payload_among_small_frames_is_read_into_its_own_buffer() -> None:
    a, b = pair()
    large = os.urandom(3 * payloads.PREALLOCATE + 5)
    sent = [
        (protocol.CALL, 1, b"first"),
        (protocol.CALL, 2, large),
        (protocol.RELEASE, 0, b"after"),
        (protocol.CALL, 4, os.urandom(payloads.PREALLOCATE - 1)),  # the largest small frame
    ]
    data = b"".join(protocol.encode(*frame) for frame in sent)
    with a, b:
        reader = FrameReader(b, size=1024)  # smaller than asked: it still holds any small frame
        writer = threading.Thread(target=a.sendall, args=(data,))
        writer.start()
        frames = [reader.next() for _ in sent]
        writer.join()
        assert all(frames)
        assert [(f.kind, f.call_id, bytes(f.payload)) for f in frames if f] == sent
        assert frames[1] is not None and isinstance(frames[1].payload, mmap.mmap)


def test_a_frame_cut_short_by_the_closed_socket_is_not_a_frame() -> None:
    a, b = pair()
    with a, b:
        a.sendall(
            protocol.encode(protocol.CALL, 1, b"whole")
            + protocol.encode(protocol.CALL, 2, b"cut")[:-1]
        )
        a.close()
        reader = FrameReader(b)
        assert frames_of(reader, 1) == [(protocol.CALL, 1, b"whole")]
        assert reader.next() is None


def marked(fd: int, size: int, call_id: int) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    frame = protocol.encode(protocol.CALL, call_id, shared_memory.MARK + struct.pack("!Q", size))
    return frame, [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_descriptors_go_with_the_frame_that_brought_them() -> None:
    a, b = pair()
    content = os.urandom(1 << 16)
    fd = os.memfd_create("test-payload")
    os.write(fd, content)
    with a, b:
        before = [protocol.encode(protocol.CALL, i, b"x" * i) for i in range(1, 4)]
        a.sendall(b"".join(before))
        frame, ancillary = marked(fd, len(content), 9)
        a.sendmsg([frame], ancillary)
        os.close(fd)
        a.sendall(protocol.encode(protocol.RELEASE, 0, b"later"))
        reader = FrameReader(b)
        assert frames_of(reader, 3) == [(protocol.CALL, i, b"x" * i) for i in range(1, 4)]
        shared = reader.next()
        assert shared is not None and shared.call_id == 9
        assert isinstance(shared.payload, mmap.mmap) and bytes(shared.payload) == content
        assert frames_of(reader, 1) == [(protocol.RELEASE, 0, b"later")]


def test_descriptors_with_a_frame_that_is_not_ours_are_closed() -> None:
    a, b = pair()
    with a, b:
        reader = FrameReader(b)
        baseline = open_fds()
        fd = os.memfd_create("test-stray")
        a.sendmsg(
            [protocol.encode(protocol.CALL, 5, b"not a mark")],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))],
        )
        os.close(fd)
        assert frames_of(reader, 1) == [(protocol.CALL, 5, b"not a mark")]
        assert open_fds() == baseline


def test_descriptors_after_a_large_payload_read_past_the_buffer_go_with_their_frame() -> None:
    a, b = pair()
    content = os.urandom(1 << 12)
    large = os.urandom(5 * payloads.PREALLOCATE)
    fd = os.memfd_create("test-payload")
    os.write(fd, content)

    def send() -> None:
        a.sendall(protocol.encode(protocol.CALL, 1, large))
        frame, ancillary = marked(fd, len(content), 2)
        a.sendmsg([frame], ancillary)
        a.sendall(protocol.encode(protocol.RELEASE, 0, b"later"))

    with a, b:
        reader = FrameReader(b, size=1024)
        writer = threading.Thread(target=send)
        writer.start()
        first = reader.next()
        writer.join()
        os.close(fd)
        assert first is not None and bytes(first.payload) == large
        shared = reader.next()
        assert shared is not None and shared.call_id == 2
        assert isinstance(shared.payload, mmap.mmap) and bytes(shared.payload) == content
        assert frames_of(reader, 1) == [(protocol.RELEASE, 0, b"later")]
