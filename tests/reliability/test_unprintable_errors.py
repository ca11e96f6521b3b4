"""Exceptions that cannot be printed: a function raising one whose ``__str__`` or ``__repr__``
fails (or returns something other than a str) still answers its caller with an error, at once,
and the endpoint's next call works, from Python and through ``flash run``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from openflash import CpuLiveServerless, RemoteError, remote

from helpers import FlashServer, write

Report = Callable[[str, str, str], None]

#: An answer well within this means no hang; it is a bound, not a speed target.
HANG_LIMIT_S = 30.0

KINDS = (
    "str-raises",
    "str-returns-int",
    "repr-raises",
    "both-raise",
    "args-raise",
    "notes-raise",
)


@remote(CpuLiveServerless(name="unprintable", workersMax=1))
def unprintable(kind: str) -> str:
    class StrRaises(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    class StrReturnsInt(Exception):
        def __str__(self):  # type: ignore[no-untyped-def]
            return 42

    class ReprRaises(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    class BothRaise(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class ArgsRaise(Exception):  # nor does it pickle
        @property
        def args(self):  # type: ignore[no-untyped-def,override]
            raise RuntimeError("no args")

        def __str__(self) -> str:
            raise ValueError("no str")

    class NotesRaise(Exception):  # not even a traceback can be made of it
        @property
        def __notes__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("no notes")

    chosen = {
        "str-raises": StrRaises,
        "str-returns-int": StrReturnsInt,
        "repr-raises": ReprRaises,
        "both-raise": BothRaise,
        "args-raise": ArgsRaise,
        "notes-raise": NotesRaise,
    }.get(kind)
    if chosen is None:
        return "fine"
    raise chosen("boom")


def _call(kind: str) -> tuple[BaseException | str, float]:
    started = time.monotonic()

    async def bounded() -> str:
        return await asyncio.wait_for(unprintable(kind), HANG_LIMIT_S)

    try:
        result: BaseException | str = asyncio.run(bounded())
    except BaseException as e:  # the error is the result under test
        result = e
    return result, time.monotonic() - started


@pytest.mark.usefixtures("flash_home")
def test_unprintable_exceptions_from_python(report: Report) -> None:
    assert _call("ok")[0] == "fine"
    slowest = 0.0
    for kind in KINDS:
        error, took = _call(kind)
        assert not isinstance(error, TimeoutError), f"{kind}: the caller hung"
        assert isinstance(error, RemoteError), f"{kind}: {error!r}"
        name = "".join(part.title() for part in kind.split("-"))
        text = str(error)
        assert name in error.exc_type and name in text, f"{kind}: {text}"
        if kind == "notes-raise":  # no traceback, but its text
            assert "NotesRaise: boom (its traceback could not be made" in text, text
        elif kind != "repr-raises":  # its str() works: the text is the message
            assert "could not be" in text, f"{kind}: {text}"  # the note says why there is none
        else:
            assert "ReprRaises: boom" in text, text
        slowest = max(slowest, took)
        assert _call("ok")[0] == "fine", f"{kind} poisoned the endpoint"
    report(
        "workers",
        "a function raising exceptions whose `__str__` raises, returns an int, whose `__repr__`"
        " raises, both, whose `args` raises (no pickle) and whose `__notes__` raises (no traceback),"
        " called from Python",
        f"each a RemoteError naming the exception's type, with its text or a note saying why it"
        f" could not be made, within {slowest * 1000:.0f} ms; the next call on the endpoint worked each time",
    )


def test_unprintable_exceptions_through_flash_run(
    tmp_path: Path, session_home: Path, uv_cache: Path, report: Report
) -> None:
    project = tmp_path / "project"
    write(
        project / "bad.py",
        """
        from openflash import Endpoint

        class StrRaises(Exception):
            def __str__(self):
                raise RuntimeError("no str for you")

        class StrReturnsInt(Exception):
            def __str__(self):
                return 42

        class BothRaise(Exception):
            def __str__(self):
                raise RuntimeError("no str")

            def __repr__(self):
                raise RuntimeError("no repr")

        @Endpoint(name="bad", workers=(0, 1))
        def bad(kind: str) -> str:
            chosen = {"str-raises": StrRaises, "str-returns-int": StrReturnsInt,
                      "both-raise": BothRaise}.get(kind)
            if chosen is None:
                return "fine"
            raise chosen("boom")
        """,
    )
    env = {"FLASH_HOME": str(session_home), "FLASH_UV_CACHE_DIR": str(uv_cache)}
    with (
        FlashServer(project, "--no-reload", env=env) as server,
        httpx.Client(base_url=server.url, timeout=HANG_LIMIT_S) as client,
    ):
        for kind in ("str-raises", "str-returns-int", "both-raise"):
            answer = client.post("/bad/runsync", json={"input": {"kind": kind}})
            body = answer.json()
            assert answer.status_code == 500, (kind, answer.text)
            assert body["status"] == "FAILED", body
            name = "".join(part.title() for part in kind.split("-"))
            assert name in body["error"] and "could not be" in body["error"], body
            job = client.post("/bad/run", json={"input": {"kind": kind}}).json()["id"]
            deadline = time.monotonic() + HANG_LIMIT_S
            while (status := client.get(f"/bad/status/{job}").json())["status"] in (
                "IN_QUEUE",
                "IN_PROGRESS",
            ):
                assert time.monotonic() < deadline, f"{kind}: the job never ended"
                time.sleep(0.05)
            assert status["status"] == "FAILED" and name in status["error"], status
            fine = client.post("/bad/runsync", json={"input": {"kind": "ok"}})
            assert fine.json().get("output") == "fine", f"{kind} poisoned the endpoint"
    report(
        "dev server",
        "a function raising exceptions whose `__str__` raises, returns an int, or whose"
        " `__str__` and `__repr__` both raise, through runsync and run",
        "each FAILED (runsync: 500) naming the exception's type with a note that its text could"
        " not be made; the next call on the endpoint worked each time",
    )
