"""``GET /metrics``: the dev server's Prometheus metrics, in the text format, with
prometheus_client.

flash_calls_total{endpoint,status}              calls that ended (COMPLETED, FAILED, TIMED_OUT,
                                                CANCELLED); a /run job counts when it ends
flash_call_duration_seconds{endpoint}           histogram: a call's time in the server
flash_call_queue_wait_seconds{endpoint}         histogram: its wait for a worker with room
flash_workers{endpoint,state}                   workers now, by state (starting, ready, busy,
                                                stopping), read at each scrape
flash_builds_total{result}                      preparations of a dependency set (ready, failed)
flash_build_duration_seconds                    histogram: their durations
flash_store_bytes                               disk the store uses (environments, layers,
                                                runtime, .debs and bytecode), at most once a minute

Each app has its own registry, so two servers in one process (tests) never share counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from openflash.envs.store import KINDS, Store

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STORE_EVERY_S = 60.0
_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_BUILDS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800)
_FINAL = ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED")


class Metrics:
    """The counters and histograms the server feeds, and the gauges read at each scrape."""

    def __init__(
        self,
        workers: Callable[[], dict[str, dict[str, int]]],
        store: Callable[[], Store | None],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "flash_calls",
            "Calls that ended, by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "flash_call_duration_seconds",
            "A call's time in the server.",
            ["endpoint"],
            buckets=_DURATIONS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "flash_call_queue_wait_seconds",
            "A call's wait for a worker with room.",
            ["endpoint"],
            buckets=_DURATIONS,
            registry=self.registry,
        )
        self.builds = Counter(
            "flash_builds",
            "Preparations of a dependency set, by result.",
            ["result"],
            registry=self.registry,
        )
        self.build_duration = Histogram(
            "flash_build_duration_seconds",
            "How long preparing a dependency set took.",
            buckets=_BUILDS,
            registry=self.registry,
        )
        self.registry.register(_Gauges(workers, store))
        #: Each (endpoint, status)'s labelled counter and histograms, looked up once.
        self._children: dict[tuple[str, str], tuple[Counter, Histogram, Histogram]] = {}

    def call(self, fields: dict[str, Any]) -> None:
        """A call that ended (access_log's fields); /run submissions wait for their job."""
        endpoint, status = fields.get("endpoint"), fields.get("status")
        if not endpoint or status not in _FINAL:
            return
        children = self._children.get((endpoint, status))
        if children is None:
            children = self._children[(endpoint, status)] = (
                self.calls.labels(endpoint, status),
                self.duration.labels(endpoint),
                self.queue_wait.labels(endpoint),
            )
        calls, duration, queue_wait = children
        calls.inc()
        if fields.get("seconds") is not None:
            duration.observe(fields["seconds"])
        if fields.get("queue_wait") is not None:
            queue_wait.observe(fields["queue_wait"])

    def runtime_event(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "build_finished":
            self.builds.labels("ready" if fields.get("ok") else "failed").inc()
            self.build_duration.observe(fields.get("seconds") or 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Gauges(Collector):
    """Workers by state and the store's size, read when scraped."""

    def __init__(
        self,
        workers: Callable[[], dict[str, dict[str, int]]],
        store: Callable[[], Store | None],
    ) -> None:
        self.workers, self.store = workers, store
        self._store_bytes: tuple[float, int] | None = None
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "flash_workers", "Workers now, by endpoint and state.", labels=["endpoint", "state"]
        )
        for endpoint, states in sorted(self.workers().items()):
            for state, count in sorted(states.items()):
                family.add_metric([endpoint, state], count)
        yield family
        size = self._size()
        if size is not None:
            yield GaugeMetricFamily("flash_store_bytes", "Disk the store uses.", value=size)

    def _size(self) -> int | None:
        with self._lock:
            now = time.monotonic()
            if self._store_bytes is None or now - self._store_bytes[0] > _STORE_EVERY_S:
                store = self.store()
                if store is None:
                    return None
                entries = [e for kind in KINDS for e in store.entries(kind)]
                sizes = store.disk_usage(entries, {"bytecode": store.bytecode})
                self._store_bytes = (now, sum(sizes.values()))
            return self._store_bytes[1]
