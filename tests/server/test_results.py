"""Results as JSON bytes (server/results.py) and the journal's result files: encoded once,
capped, sent as they are, and removed with their job (real SQLite files on disk)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import stat
from pathlib import Path

import pytest

from openflash import _settings
from openflash.errors import ConfigError
from openflash.server import results
from openflash.server.call_records import shown
from openflash.server.job_journal import JobJournal

LARGE = {"text": "é" * 50_000, "n": [1.5, float("nan")], "odd": "x\udcff"}


def _body(response: object) -> bytes:
    async def read() -> bytes:
        return b"".join([bytes(part) async for part in response.body_iterator])  # type: ignore[attr-defined]

    return asyncio.run(read())


def test_encode_writes_what_every_response_writes() -> None:
    data = results.encode(LARGE).data
    assert json.loads(data) == {"text": "é" * 50_000, "n": [1.5, None], "odd": "x\udcff"}
    assert b'"x\\udcff"' in data  # a lone surrogate escaped, as json.dumps writes it
    assert len(data) > results.INLINE_BYTES


def test_the_cap_names_the_size_the_cap_and_the_setting() -> None:
    assert results.too_large(10, 10) is None and results.too_large(10**9, None) is None
    reason = results.too_large(2_097_154, 1 << 20)
    assert reason is not None
    assert "2097154 bytes" in reason and "FLASH_MAX_RESULT_BYTES=1048576" in reason
    assert "raise FLASH_MAX_RESULT_BYTES" in reason


def test_the_cap_setting_is_read_and_checked() -> None:
    assert _settings.max_result_bytes({}) == 20 << 20
    assert _settings.max_result_bytes({"FLASH_MAX_RESULT_BYTES": "256M"}) == 256 << 20
    assert _settings.max_result_bytes({"FLASH_MAX_RESULT_BYTES": "0"}) is None
    with pytest.raises(ConfigError) as bad:
        _settings.max_result_bytes({"FLASH_MAX_RESULT_BYTES": "lots"})
    assert "FLASH_MAX_RESULT_BYTES='lots' is not a size" in str(bad.value)
    assert "FLASH_MAX_RESULT_BYTES=2G" in (bad.value.hint or "")


def test_a_large_body_is_sent_as_its_bytes_after_the_rest(tmp_path: Path) -> None:
    encoded = results.encode(LARGE)
    body = {"id": "j1", "status": "COMPLETED", "output": encoded, "delayTime": 3}
    for response in (
        results.respond(body),
        results.respond({**body, "output": _stored(tmp_path, encoded)}),
    ):
        sent = _body(response)
        assert int(response.headers["content-length"]) == len(sent)
        assert json.loads(sent) == {
            "id": "j1",
            "status": "COMPLETED",
            "delayTime": 3,
            "output": json.loads(encoded.data),
        }
        assert sent.endswith(encoded.data + b"}")  # the bytes as they are, last
    small = results.respond({"id": "j2", "status": "COMPLETED", "output": [1]})
    assert json.loads(small.body) == {"id": "j2", "status": "COMPLETED", "output": [1]}


def _stored(tmp_path: Path, encoded: results.Encoded) -> results.Stored:
    path = tmp_path / "out.json"
    path.write_bytes(encoded.data)
    return results.Stored(path, len(encoded.data))


def test_the_dashboard_keeps_a_preview_of_a_large_result() -> None:
    encoded = results.encode(LARGE)
    view = shown(results.preview(encoded))
    assert view["cut"] is True and view["bytes"] == len(encoded.data)
    assert encoded.data.decode().startswith(view["json"])
    assert len(view["json"].encode()) <= results.INLINE_BYTES


def test_a_large_job_result_lives_in_its_file_and_goes_with_its_job(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path / ".flash" / "jobs.sqlite3")
    encoded = results.encode(LARGE)
    small, large = journal.add("/r", {}), journal.add("/r", {})
    for job in (small, large):
        journal.started(job.id)
    journal.finish(small.id, "COMPLETED", output=results.encode([1, 2]))
    journal.finish(large.id, "COMPLETED", output=encoded)
    file = journal.result_file(large.id)
    assert file.read_bytes() == encoded.data
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    assert not journal.result_file(small.id).exists()  # small: in its row
    assert journal.get(small.id).output == [1, 2]
    assert journal.get(large.id).output == json.loads(encoded.data)  # read from its file
    assert journal.get(large.id, load=False).output == results.Stored(file, len(encoded.data))
    file.rename(file.with_suffix(".aside"))  # a file removed by hand: said, not a crash
    gone = journal.get(large.id, load=False)
    assert gone.output is None and f"was kept in {file}, which is gone" in (gone.error or "")
    file.with_suffix(".aside").rename(file)
    # Ended once: a second end (a cancel racing it) neither changes it nor leaves a file.
    journal.finish(large.id, "CANCELLED", output=encoded)
    assert journal.get(large.id, load=False).status == "COMPLETED" and file.exists()
    # Retried: the outcome and its file go.
    journal.finish(small.id, "FAILED", error="x")
    journal.requeue(large.id, reopen=True)
    assert not file.exists() and journal.get(large.id).output is None
    journal.started(large.id)
    journal.finish(large.id, "COMPLETED", output=encoded)
    assert file.exists()
    assert sorted(journal.expire(before=float("inf"))) == sorted([small.id, large.id])
    assert not file.exists()
    assert os.listdir(journal.results) == []
    journal.close()


def test_a_result_file_no_row_names_is_removed_when_the_journal_opens(tmp_path: Path) -> None:
    path = tmp_path / ".flash" / "jobs.sqlite3"
    journal = JobJournal(path)
    job = journal.add("/r", {})
    journal.started(job.id)
    journal.finish(job.id, "COMPLETED", output=results.encode(LARGE))
    journal.close()
    # A server killed after writing a result's file and before its row said the job ended.
    orphan = path.parent / "results" / "f00.json"
    orphan.write_bytes(b"[1]")
    again = JobJournal(path)
    assert not orphan.exists()
    assert again.result_file(job.id).exists()  # a row names it: kept
    again.close()


def test_a_small_output_already_encoded_is_spliced_into_the_same_bytes() -> None:
    """``respond(body, status, encoded)`` (a /runsync answer: its output's JSON made once by
    ``call_outcome``) sends what ``JSONResponse`` sends for the body, head and bytes alike; it
    splices the JSON it was given where that is the same, and makes it again where not."""
    from starlette.responses import JSONResponse as StarletteJSON

    from openflash.server.responses import JSONBytes, JSONResponse

    outputs: list[tuple[object, bool]] = [
        ({"x": 1, "words": ["a", "b"], "f": 0.1}, True),  # ASCII: spliced
        ([], True),
        (None, True),
        ({"n": float("nan"), "i": float("inf")}, True),  # null for both, as the fallback writes
        ("x\udcff", True),  # a lone surrogate: escaped, ASCII, as the fallback writes it
        ({"word": "é€😀"}, False),  # UTF-8 in the body: made again
        ({"word": "é", "n": float("nan")}, False),  # the fallback's ASCII body: made again
    ]
    ids = ("0f3bd712b5f74929ba0e39ad5680b3f1", 'j-1 "q" \\ é')  # ours; one to escape
    for (output, splices), job_id in itertools.product(outputs, ids):
        body = {"id": job_id, "status": "COMPLETED", "output": output}
        splices = splices and job_id.isascii()
        encoded = results.utf8(results.json_text(output))
        response = results.respond(body, 200, encoded)
        expected = JSONResponse(body)
        assert (response.status_code, response.raw_headers, bytes(response.body)) == (
            200,
            expected.raw_headers,
            bytes(expected.body),
        ), (output, job_id)
        assert isinstance(response, JSONBytes) is splices, (output, job_id)
        if splices:  # the bytes given are the ones sent, not made again
            assert bytes(response.body).endswith(b'"output":' + encoded.data + b"}")
    plain = {"id": "j", "status": "COMPLETED", "output": {"x": 1}}
    head = StarletteJSON(plain)  # Starlette's own head: content-length, then content-type
    assert results.respond(plain, 200, results.encode({"x": 1})).raw_headers == head.raw_headers
    failed = {"id": "j", "status": "FAILED", "output": {"x": 1}}  # another status: made whole
    assert results.respond(failed, 200, results.encode({"x": 1})).body == JSONResponse(failed).body
    # output not last (a body Runpod's shape orders otherwise): made again, the same bytes
    out_of_order = {"output": {"x": 1}, "id": "j"}
    response = results.respond(out_of_order, 500, results.encode({"x": 1}))
    assert not isinstance(response, JSONBytes) and response.status_code == 500
    assert bytes(response.body) == b'{"output":{"x":1},"id":"j"}'
