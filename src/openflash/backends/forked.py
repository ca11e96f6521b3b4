"""A worker forked by a template (backends/templates.py), with the face of an
``asyncio.subprocess.Process`` (pid, stdout, stderr, wait, returncode), so that the local
backend's worker handle serves spawned and forked workers alike. Its exit status comes from its
template; if the template is gone, the status is unknown (None)."""

from __future__ import annotations

import asyncio
import os
import socket

__all__ = ["ForkedProcess", "pidfd_pid", "reader_for", "receive"]


class ForkedProcess:
    """A worker forked by a template, as the local backend sees a process."""

    def __init__(
        self,
        pid: int,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        exit_code: asyncio.Future[int | None],
    ) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self._exit = exit_code
        self._pidfd: int | None = None
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):  # already gone, or no pidfd here
            loop.call_later(0.5, self._unknown)
        else:
            loop.add_reader(self._pidfd, self._gone)
        exit_code.add_done_callback(lambda _: self._close_pidfd())

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    def _gone(self) -> None:
        """The process ended; its status comes from its template, unless the template is gone."""
        self._close_pidfd()
        asyncio.get_running_loop().call_later(0.5, self._unknown)

    def _unknown(self) -> None:
        if not self._exit.done():
            self._exit.set_result(None)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    async def wait(self) -> int | None:
        return await asyncio.shield(self._exit)


async def reader_for(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader


def pidfd_pid(pidfd: int) -> int | None:
    """The pid, in this process's PID namespace, of the process ``pidfd`` refers to (from
    ``/proc/self/fdinfo``); None if it has ended or the kernel does not say."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    pid = int(line.split()[1])
                    return pid if pid > 0 else None
    except (OSError, ValueError):
        return None
    return None


async def receive(sock: socket.socket, size: int) -> tuple[bytes, int | None]:
    """A template's next message on the non-blocking ``sock``, and the pid in this namespace of
    the process whose pidfd came with it (workers/forkserver.py), if one did."""
    loop = asyncio.get_running_loop()
    fd = sock.fileno()  # kept: a socket closed meanwhile says -1
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, size, 1)
        except (BlockingIOError, InterruptedError):
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _set, readable)
            try:
                await readable
            finally:
                if sock.fileno() != -1:  # closed meanwhile (Template._kill): not ours to drop
                    loop.remove_reader(fd)  # (its number may be a new socket's by now)
            continue
        pid = None
        for fd in fds:
            pid = pid or pidfd_pid(fd)
            os.close(fd)
        return data, pid


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
