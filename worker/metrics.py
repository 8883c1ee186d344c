"""Prometheus metrics of one worker process, served at ``/metrics`` by the HTTP app.

Each worker gets its own registry (not the global one), so tests can run several workers in one
process and read exact numbers.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from worker.shoptet_paths import SHOPTET_PATH_WORDS

M = TypeVar("M", Counter, Histogram)


def endpoint_label(path: str) -> str:
    """``/api/orders/2024000123/status`` -> ``/api/orders/{id}/status``: bounded label values (a
    segment that is not a word of Shoptet's paths is an id)."""
    parts = [p if not p or p in SHOPTET_PATH_WORDS else "{id}" for p in path.split("?")[0].split("/")]
    return "/".join(parts) or "/"


class _LagCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self.source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "shoptet_worker_consumer_lag",
            "Records behind the end of its partitions (high watermark minus committed), per consumer",
            labels=["consumer"],
        )
        for name, lag in self.source():
            family.add_metric([name], lag)
        yield family


#: Upper bounds of the message duration histogram, in seconds.
MESSAGE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: The same bounds as the ``le`` labels Prometheus expects, ``+Inf`` last.
_BUCKET_LABELS = [*(floatToGoString(b) for b in MESSAGE_SECONDS_BUCKETS), "+Inf"]


class _NodeMessages:
    """One node's handled messages: counts per outcome and a duration histogram."""

    __slots__ = ("buckets", "outcomes", "seconds")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.buckets = [0] * (len(MESSAGE_SECONDS_BUCKETS) + 1)  # the last one is +Inf
        self.seconds = 0.0


class _MessageCollector(Collector):
    """``shoptet_worker_messages_total`` and ``shoptet_worker_message_seconds``, counted in plain
    Python and turned into metric families only when scraped.

    These two are updated on every hop; prometheus_client's Counter and Histogram take a lock and
    walk the buckets on each update, which was a tenth of a pass-through hop. Only the event loop
    updates them.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, _NodeMessages] = {}

    def observe(self, node: str, outcome: str, seconds: float) -> None:
        stats = self.nodes.get(node)
        if stats is None:
            stats = self.nodes[node] = _NodeMessages()
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        stats.buckets[bisect_left(MESSAGE_SECONDS_BUCKETS, seconds)] += 1
        stats.seconds += seconds

    def collect(self) -> Iterable[CounterMetricFamily | HistogramMetricFamily]:
        messages = CounterMetricFamily(
            "shoptet_worker_messages", "Messages handled per node and outcome", labels=["node", "outcome"]
        )
        duration = HistogramMetricFamily(
            "shoptet_worker_message_seconds", "Time to handle one message", labels=["node"]
        )
        for node, stats in list(self.nodes.items()):
            for outcome, count in list(stats.outcomes.items()):
                messages.add_metric([node, outcome], count)
            buckets = list(zip(_BUCKET_LABELS, accumulate(stats.buckets), strict=True))
            duration.add_metric([node], buckets, stats.seconds)
        yield messages
        yield duration


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._messages = _MessageCollector()
        r.register(self._messages)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.emitted = Counter("shoptet_worker_batch_items", "Items emitted by batch nodes", ["node"], registry=r)
        self.retries = Counter("shoptet_worker_retries", "Messages sent to the retry path", ["node"], registry=r)
        self.trash = Counter("shoptet_worker_trashed", "Messages moved to trash", ["node"], registry=r)
        self.trash_size = Gauge("shoptet_worker_trash_size", "Entries in trash", registry=r)
        self.processes = Counter("shoptet_worker_processes_started", "Processes started", ["topology"], registry=r)
        self.requests = Counter(
            "shoptet_api_requests",
            "Shoptet API requests by endpoint and status",
            ["method", "endpoint", "status"],
            registry=r,
        )
        self.limiter_wait = Histogram(
            "shoptet_limiter_wait_seconds",
            "Time spent waiting for a token's connection slot",
            registry=r,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

    def _child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, looked up once: ``labels()`` takes a lock and validates, and
        the per-message metrics ran it on every message."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_message(self, node: str, outcome: str, seconds: float) -> None:
        self._messages.observe(node, outcome, seconds)

    def items_emitted(self, node: str) -> None:
        self._child(self.emitted, node).inc()

    def retried(self, node: str) -> None:
        self.retries.labels(node).inc()

    def trashed(self, node: str) -> None:
        self.trash.labels(node).inc()

    def process_started(self, topology: str) -> None:
        self.processes.labels(topology).inc()

    def shoptet_response(self, method: str, path: str, status: int) -> None:
        self.requests.labels(method, endpoint_label(path), str(status)).inc()

    def limiter_waited(self, key: str, seconds: float) -> None:
        self.limiter_wait.observe(seconds)

    def watch_lag(self, source: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self.registry.register(_LagCollector(source))

    def render(self) -> bytes:
        return generate_latest(self.registry)
