"""Prometheus metrics of one worker process, served at ``/metrics`` by the HTTP app.

Each worker gets its own registry (not the global one), so tests can run several workers in one
process and read exact numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

M = TypeVar("M", Counter, Histogram)

_ID_SEGMENT = re.compile(r"^(?=.*\d)[\w.-]+$|^[0-9a-f-]{16,}$")


def endpoint_label(path: str) -> str:
    """``/api/orders/2024000123/status`` -> ``/api/orders/{id}/status``: bounded label values."""
    parts = [("{id}" if _ID_SEGMENT.match(p) else p) for p in path.split("?")[0].split("/")]
    return "/".join(parts) or "/"


class _LagCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self.source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "shoptet_worker_consumer_lag", "Records fetched but not yet committed, per consumer", labels=["consumer"]
        )
        for name, lag in self.source():
            family.add_metric([name], lag)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "shoptet_worker_messages", "Messages handled per node and outcome", ["node", "outcome"], registry=r
        )
        self.duration = Histogram(
            "shoptet_worker_message_seconds",
            "Time to handle one message",
            ["node"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
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
        self._child(self.messages, node, outcome).inc()
        self._child(self.duration, node).observe(seconds)

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
