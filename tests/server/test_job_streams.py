"""A /run job's feed keeps its items only while they may still be asked for (job_streams.py)."""

from __future__ import annotations

import asyncio

from openflash.server import job_streams
from openflash.server.job_streams import Feed, Feeds


def test_a_completed_jobs_items_are_released_and_read_from_the_aggregate() -> None:
    async def main() -> None:
        feed = Feed()
        for item in ("a", "b", "c"):
            feed.add(item)
        assert feed.since(1, None) == ["b", "c"]
        feed.finish(completed=True)
        assert feed.items == [] and feed.total == 3  # the journal holds the aggregate now
        # Until the journal has it, nothing is skipped; then the unread rest comes from it.
        assert feed.since(1, None) == []
        assert feed.since(1, ["a", "b", "c"]) == ["b", "c"]
        assert feed.since(3, ["a", "b", "c"]) == []

    asyncio.run(main())


def test_a_failed_jobs_items_stay_until_read() -> None:
    async def main() -> None:
        feed = Feed()
        feed.add(1)
        feed.add(2)
        feed.finish(completed=False)  # no aggregate in the journal: the items are all there is
        assert feed.since(0, None) == [1, 2]
        feed.release()
        assert feed.items == [] and feed.total == 2

    asyncio.run(main())


def test_feeds_keep_a_bounded_number_of_ended_jobs(monkeypatch) -> None:
    monkeypatch.setattr(job_streams, "ENDED_FEEDS", 2)

    async def main() -> Feeds:
        feeds = Feeds()
        running = Feed()
        feeds["running"] = running
        for i in range(4):
            feed = Feed()
            feed.finish(completed=True)
            feeds[f"ended-{i}"] = feed
        return feeds

    feeds = asyncio.run(main())
    assert list(feeds) == ["running", "ended-2", "ended-3"]  # the oldest ended ones went
