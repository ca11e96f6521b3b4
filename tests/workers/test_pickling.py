"""Results pickled by the standard pickler where that writes what cloudpickle would
(pickling.plain_pickle: a warm call's result without a cloudpickle pickler built), and only
there."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from openflash.workers import pickling


class Name(str):
    """A str subclass: its class is the caller's to lack (portable.py converts it)."""


PLAIN = [
    0,
    -(2**70),
    1.5,
    2j,
    "text",
    b"bytes",
    True,
    None,
    [1, "a", None],
    (1.0, b"x"),
    {"a": 1, 2: None},
    [],
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_values_pickle_as_cloudpickle_would(value: Any) -> None:
    data = pickling.plain_pickle(value)
    assert data is not None
    packed = pickling.pack(value, None)
    assert not packed.buffers and bytes(packed.data) == data
    assert pickle.loads(data) == value


NOT_PLAIN = [
    Name("x"),
    [Name("x")],
    [[1]],
    {"a": [1]},
    {(1,): 1},
    list(range(100)),
    object(),
    memoryview(b"x"),
]


@pytest.mark.parametrize("value", NOT_PLAIN, ids=repr)
def test_anything_else_is_left_to_the_cloudpickle_pickler(value: Any) -> None:
    assert pickling.plain_pickle(value) is None
