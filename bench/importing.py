"""The order import measured end to end: simulator, embedded broker, a Worker running order-import.

Shared by :mod:`bench.order_import` (one e-shop) and :mod:`bench.many_eshops` (ten). The clock runs
from the first ``run_manual`` until the sink ``shoptet.orders`` holds every order (every Shoptet
request of the run precedes its order's sink message); the ``process finished`` events are awaited
afterwards for the counts (retries, trash).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer

from applications.installs import install_premium
from bench.common import TOPOLOGY_DIR, bench_settings
from bench.offsets import RecordCounter
from bench.sim import BenchSimulator, count_ok
from worker.app import Worker
from worker.broker import EmbeddedBroker
from worker.starter import run_manual
from worker.tasks import cancel_and_wait
from worker.topology import TopologyVersion, parse_topology

TOPOLOGY = "order-import"
NODES = ["shoptet-get-orders-list", "shoptet-get-order-detail"]
ORDER_ENDPOINTS = ("GET /api/orders", "GET /api/orders/{code}")
#: Shoptet: 3 concurrent connections per token.
PER_TOKEN = 3


@dataclass
class ImportRun:
    """What one import run measured."""

    orders: int
    eshops: int
    latency_ms: float
    seconds: float
    requests: int
    served429: int
    max_concurrency_per_token: int
    sink_messages: int
    finished_events: list[dict[str, Any]] = field(default_factory=list)
    seconds_to_finished_event: float | None = None
    sim_mode: str = ""

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def limit(self) -> float:
        """``eshops x 3 / L``: the most any client can do against Shoptet."""
        return self.eshops * PER_TOKEN / (self.latency_ms / 1000)

    @property
    def trashed(self) -> int:
        return sum(int(e.get("trashed", 0)) for e in self.finished_events)

    @property
    def retries(self) -> int:
        return sum(int(e.get("retries", 0)) for e in self.finished_events)


def order_import_topology(worker: Worker, detail_concurrency: int | None) -> TopologyVersion:
    """``topology/order-import.yaml`` as shipped, or with another ``concurrency`` on the detail node."""
    source = (TOPOLOGY_DIR / f"{TOPOLOGY}.yaml").read_text()
    if detail_concurrency is not None:  # on the parsed file: a text match broke when its comment changed
        data = yaml.safe_load(source)
        [detail] = [n for n in data["nodes"].values() if n.get("node") == "shoptet-get-order-detail"]
        detail["concurrency"] = detail_concurrency
        source = yaml.safe_dump(data, sort_keys=False)
    return parse_topology(source, origin=f"{TOPOLOGY}.yaml", registry=worker.registry)


async def run_import(
    *, orders: int, eshops: int, latency_ms: float = 50.0, detail_concurrency: int | None = None, timeout: float = 900.0
) -> ImportRun:
    """Import ``orders`` orders from each of ``eshops`` e-shops at once and measure it."""
    async with BenchSimulator(orders=orders, eshops=eshops, latency_ms=latency_ms) as sim:
        with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
            async with EmbeddedBroker() as broker:
                settings = bench_settings(broker.bootstrap_servers, Path(tmp), shoptet_api_url=sim.url, redis_url="")
                worker = Worker(settings, node_names=NODES)
                try:
                    await worker.start(deploy=[order_import_topology(worker, detail_concurrency)])
                    users = [f"bench-eshop-{i}" for i in range(eshops)]
                    for user, token in zip(users, sim.tokens, strict=True):
                        await install_premium(worker.rt.store, worker.rt.http, api_url=sim.url, user=user, token=token)
                    return await _measure(worker, sim, users, orders, latency_ms, timeout)
                finally:
                    await worker.stop()


async def _measure(
    worker: Worker, sim: BenchSimulator, users: list[str], orders: int, latency_ms: float, timeout: float
) -> ImportRun:
    rt = worker.rt
    expected = orders * len(users)
    sink = await RecordCounter.open(rt.bootstrap_servers, "shoptet.orders")
    events = _EventCollector(rt.bootstrap_servers, rt.topics.process_events)
    await events.start()
    try:
        await sim.reset_stats()
        started = time.perf_counter()
        starts = await asyncio.gather(*(run_manual(rt, TOPOLOGY, user=u, body={}) for u in users))
        delivered = await sink.wait_for(expected, timeout, started, what="orders in the sink")
        seconds = time.perf_counter() - started
        stats = await sim.stats()
        roots = {m.process_id for m in starts}
        finished = await events.wait_for(roots, timeout=30.0)
        to_finished = (events.last_at - started) if finished else None
    finally:
        await events.stop()
        await sink.close()
    per_token = stats["peakRequestsPerToken"]  # arrived at once, refused ones too
    return ImportRun(
        orders=orders,
        eshops=len(users),
        latency_ms=latency_ms,
        seconds=seconds,
        requests=count_ok(stats, *ORDER_ENDPOINTS),
        served429=int(stats["served429"]),
        max_concurrency_per_token=max(per_token.values(), default=0),
        sink_messages=delivered,
        finished_events=[events.events[r] for r in roots if r in events.events],
        seconds_to_finished_event=to_finished,
        sim_mode=sim.mode,
    )


class _EventCollector:
    """Reads ``process finished`` events in the background."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        self.events: dict[str, dict[str, Any]] = {}
        self.last_at = 0.0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self.consumer:
            with contextlib.suppress(ValueError):
                event = json.loads(record.value or b"{}")
                self.events[str(event.get("root"))] = event
                self.last_at = time.perf_counter()
                self._changed.set()

    async def wait_for(self, roots: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not roots <= self.events.keys():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.consumer.stop()
