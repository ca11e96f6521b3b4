"""A worker forked by a template (backends/templates.py), with the face of an
``asyncio.subprocess.Process`` (pid, stdout, stderr, wait, returncode), so that the local
backend's worker handle serves spawned and forked workers alike. Its exit status comes from its
template; if the template is gone, the status is unknown (None)."""

from __future__ import annotations

import asyncio
import os

__all__ = ["ForkedProcess", "reader_for"]


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
