"""Every error openflash raises, each with a hint that says what to do.

    FlashError                      base: ``.message`` and ``.hint``
     ├── ConfigError                a resource config or Endpoint argument is invalid (ValueError)
     ├── DependencyError            a dependency spec is invalid or names no package (ValueError)
     │    ├── DependencyConflictError   the specs cannot be satisfied together (uv's explanation)
     │    └── SystemDependencyError     a system (apt) package name is invalid or unknown
     ├── EnvironmentBuildError      building an environment failed (uv's output)
     │    └── StoreFullError            ... because FLASH_HOME's disk is full (also an OSError)
     ├── StorePermissionError       a store file belongs to another user (also a PermissionError)
     ├── WorkerCrashedError         the worker died: exit code or signal, last lines of stderr
     ├── ExecutionTimeoutError      a call ran past executionTimeoutMs (TimeoutError)
     ├── DeadlockError              a nested call could never run: its pool is full of calls
     │                              that wait on nested calls (RuntimeError)
     └── RemoteError                user code raised in the worker (remote traceback); it is also
                                    an instance of the original exception's class where possible

``str(error)`` is the message followed by ``Hint: ...``. Errors pickle with their hint, so they can
cross process boundaries.
"""

from __future__ import annotations

import errno
import os
from typing import Any

__all__ = [
    "ConfigError",
    "DeadlockError",
    "DependencyConflictError",
    "DependencyError",
    "EnvironmentBuildError",
    "ExecutionTimeoutError",
    "FlashError",
    "RemoteError",
    "StoreFullError",
    "StorePermissionError",
    "SystemDependencyError",
    "WorkerCrashedError",
]


class FlashError(Exception):
    """Base class: a message that names the bad value, and a hint that says what to do."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\nHint: {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class ConfigError(FlashError, ValueError):
    """A resource config, decorator or Endpoint argument is invalid."""

    hint = "check the field's allowed values in the openflash API reference"


class DependencyError(FlashError, ValueError):
    """A dependency spec is invalid, or names a package the index does not have."""

    hint = "use PEP 508 strings such as 'numpy==1.26.2', 'Pillow>=10.0.0' or 'requests'"


class DependencyConflictError(DependencyError):
    """The dependency specs cannot all be satisfied together."""

    hint = "relax or change the conflicting pins named above, then call again"


class SystemDependencyError(DependencyError):
    """A system dependency is not a valid Debian package name, or the index does not have it."""

    hint = "use Debian package names such as 'ffmpeg', 'libgl1' or 'graphviz'"


class EnvironmentBuildError(FlashError):
    """Building an environment (venv, packages) failed."""

    hint = "read the installer output above; a retry builds from scratch, nothing partial is kept"


class StoreFullError(EnvironmentBuildError, OSError):
    """The disk holding FLASH_HOME filled up during a build; nothing partial was kept."""

    hint = (
        "free some space (`flash env prune` removes environments no endpoint uses) or point "
        "FLASH_HOME at a bigger disk, then call again; nothing partial was kept"
    )

    def __init__(self, message: str, *, hint: str | None = None, path: str = "") -> None:
        super().__init__(message, hint=hint)
        self.errno = errno.ENOSPC
        self.strerror = os.strerror(errno.ENOSPC)
        self.filename = path or None


class StorePermissionError(FlashError, PermissionError):
    """A file or directory of the store belongs to another user: openflash will not use it."""

    hint = (
        "remove it (openflash rebuilds what it needs on the next call), or give this user a "
        "FLASH_HOME of its own"
    )


class WorkerCrashedError(FlashError):
    """The worker process died while running calls."""

    hint = "the pool has replaced the worker; look at the stderr lines above for the cause"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.signal = signal
        self.stderr_tail = stderr_tail


class ExecutionTimeoutError(FlashError, TimeoutError):
    """A call ran past its endpoint's executionTimeoutMs; its worker was killed."""

    hint = "raise executionTimeoutMs (0 means no limit), or make the function faster"


class DeadlockError(FlashError, RuntimeError):
    """A nested call was failed: every worker its endpoint may run waits on nested calls."""

    hint = (
        "raise workersMax (or max_concurrency) of the endpoint named above, or make the call "
        "from the caller instead of from inside the endpoint"
    )


class RemoteError(FlashError):
    """An exception raised by user code inside a worker.

    ``exc_type`` is the original exception's qualified name, ``remote_traceback`` the traceback
    text from the worker, ``exception`` the original exception when it could be unpickled here.
    ``RemoteError.wrap`` returns an instance that is also of the original class, so
    ``except ValueError`` catches a ValueError raised remotely.
    """

    hint = "the exception was raised by your function inside its worker; see the remote traceback"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        exc_type: str = "Exception",
        remote_traceback: str = "",
        missing_module: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback
        self.missing_module = missing_module
        self.exception: BaseException | None = None

    def __str__(self) -> str:
        text = self.message
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return f"{text}\nHint: {self.hint}" if self.hint else text

    @classmethod
    def wrap(
        cls,
        original: BaseException | None,
        message: str,
        **fields: Any,
    ) -> RemoteError:
        """A RemoteError that is also an instance of ``type(original)`` where Python allows."""
        error_cls: type[RemoteError] = cls
        if original is not None and isinstance(original, Exception):
            error_cls = _remote_subclass(type(original))
        try:
            error = error_cls(message, **fields)
        except TypeError:  # a base class whose __init__ wants other arguments
            error = cls(message, **fields)
        error.exception = original
        return error


_REMOTE_SUBCLASSES: dict[type[BaseException], type[RemoteError]] = {}


def _remote_subclass(base: type[BaseException]) -> type[RemoteError]:
    if issubclass(base, RemoteError):
        return RemoteError
    cached = _REMOTE_SUBCLASSES.get(base)
    if cached is not None:
        return cached
    try:
        namespace = {
            "__module__": __name__,
            "__init__": RemoteError.__init__,
            "__str__": RemoteError.__str__,
            "__repr__": RemoteError.__repr__,  # not the original's, which may fail
            "__reduce__": _reduce_remote_subclass,
        }
        sub: type[RemoteError] = type(f"Remote{base.__name__}", (RemoteError, base), namespace)
    except TypeError:  # layout conflicts, final classes
        sub = RemoteError
    _REMOTE_SUBCLASSES[base] = sub
    return sub


def _reduce_remote_subclass(self: RemoteError) -> tuple[Any, ...]:
    # Dynamic classes cannot be pickled by name: travel as a plain RemoteError.
    return (_restore, (RemoteError, self.args, dict(self.__dict__)))


def _restore(cls: type[FlashError], args: tuple[Any, ...], state: dict[str, Any]) -> FlashError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error
