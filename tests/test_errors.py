from __future__ import annotations

import pickle

import pytest

from openflash.errors import (
    ConfigError,
    DependencyConflictError,
    DependencyError,
    ExecutionTimeoutError,
    FlashError,
    RemoteError,
    SystemDependencyError,
    WorkerCrashedError,
)


def test_message_ends_with_the_hint() -> None:
    error = DependencyError("dependencies[0] 'x' is bad", hint="fix it")
    assert str(error) == "dependencies[0] 'x' is bad\nHint: fix it"
    assert error.message == "dependencies[0] 'x' is bad"


@pytest.mark.parametrize(
    "cls",
    [
        ConfigError,
        DependencyError,
        DependencyConflictError,
        SystemDependencyError,
        WorkerCrashedError,
        ExecutionTimeoutError,
        RemoteError,
    ],
)
def test_every_error_has_a_default_hint_and_a_familiar_base(cls: type[FlashError]) -> None:
    assert issubclass(cls, FlashError)
    assert cls.hint
    error = cls("something failed")
    assert str(error).endswith(f"Hint: {cls.hint}")


def test_builtin_bases_let_familiar_excepts_work() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(DependencyError, ValueError)
    assert issubclass(ExecutionTimeoutError, TimeoutError)


def test_errors_pickle_with_their_hint_and_fields() -> None:
    error = WorkerCrashedError("died", hint="h", exit_code=3, stderr_tail="tail")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is WorkerCrashedError
    assert (again.message, again.hint, again.exit_code, again.stderr_tail) == (
        "died",
        "h",
        3,
        "tail",
    )


def test_remote_error_is_also_the_original_class() -> None:
    original = ValueError("bad value")
    error = RemoteError.wrap(
        original,
        "ValueError: bad value",
        exc_type="ValueError",
        remote_traceback="Traceback...\nValueError: bad value\n",
    )
    assert isinstance(error, RemoteError) and isinstance(error, ValueError)
    assert error.exception is original
    assert "Remote traceback:\nTraceback..." in str(error)
    with pytest.raises(ValueError):
        raise error
    assert type(RemoteError.wrap(KeyError("k"), "m")) is type(RemoteError.wrap(KeyError("j"), "n"))
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, RemoteError) and again.exc_type == "ValueError"


def test_remote_error_falls_back_where_subclassing_is_impossible() -> None:
    class Picky(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(a, b)

    error = RemoteError.wrap(Picky(1, 2), "Picky", exc_type="Picky")
    assert isinstance(error, RemoteError)
    assert RemoteError.wrap(None, "gone").exception is None
