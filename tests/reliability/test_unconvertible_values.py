"""Values that cannot cross the boundary (corpus.UNCONVERTIBLE): clear errors naming the type,
from real workers to Python, and JSON that names the type instead of a 500 over HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading

import pytest

from openflash import CpuLiveServerless, FlashError, remote
from openflash.server.invocation import to_json

from corpus import UNCONVERTIBLE

pytestmark = pytest.mark.usefixtures("flash_home")


@remote(CpuLiveServerless(name="unconvertible"))
def make(expression: str) -> object:
    import os  # noqa: F401
    import socket  # noqa: F401
    import sys  # noqa: F401
    import threading  # noqa: F401

    return eval(expression)


@pytest.mark.parametrize(("expression", "type_name"), UNCONVERTIBLE)
def test_a_worker_returning_it_fails_naming_the_type(expression: str, type_name: str) -> None:
    with pytest.raises(FlashError) as caught:
        asyncio.run(make(expression))
    assert type_name in str(caught.value)
    assert asyncio.run(make("[1, 'two']")) == [1, "two"]  # the worker is still fine


@pytest.mark.parametrize(("expression", "type_name"), UNCONVERTIBLE)
def test_its_json_form_names_the_type(expression: str, type_name: str) -> None:
    scope = {"os": os, "socket": socket, "sys": sys, "threading": threading}
    value = eval(expression, scope)
    encoded = to_json(value)
    assert type_name in str(encoded) and "cannot be encoded as JSON" in str(encoded)
    del value  # its files and sockets close
