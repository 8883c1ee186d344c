"""A simulated shop and a worker with every node and every shipped topology.

Real parts only: the embedded (or configured) Kafka broker, the simulator over HTTP, a SQLite store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from applications.installs import install_premium
from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from tests.support import settings_for_test
from worker.app import Worker
from worker.settings import Settings
from worker.store import Install
from worker.topology import TopologyVersion, load_topology_dir, parse_topology

TOPOLOGY_DIR = Path(__file__).parents[2] / "topology"
ORDERS = 500


@dataclass
class Stack:
    sim: SimulatorServer
    worker: Worker
    install: Install
    settings: Settings

    def inbound(self, topic: str) -> str:
        """The name this stack's topologies use for a shipped inbound topic (see :func:`fast_retries`)."""
        return f"{self.settings.kafka_topic_prefix}.{topic}"


def fast_retries(
    tv: TopologyVersion, interval: float = 0.2, max_hops: int | None = None, *, prefix: str
) -> TopologyVersion:
    """The same topology with short retry intervals, so fault tests do not wait minutes.

    Its inbound topics get the stack's prefix: the shipped names are shared by every test on the
    broker, and a new stack's consumer group reads them from the start, so it ran the records that
    earlier tests had written, as this stack's install (same user), before and after it existed.
    """
    data: dict[str, Any] = yaml.safe_load(tv.source)
    for start in data["start"]:
        if "topic" in start:
            start["topic"] = f"{prefix}.{start['topic']}"
    for spec in data["nodes"].values():
        if "node" in spec:
            retry = spec.setdefault("retry", {})
            retry["interval"] = interval
            if max_hops is not None:
                retry["max_hops"] = max_hops
    return parse_topology(yaml.safe_dump(data, sort_keys=False), f"{tv.name} (fast retries)")


@asynccontextmanager
async def running_stack(
    kafka_bootstrap: str, tmp: Path, config: SimulatorConfig, *, max_hops: int | None = None, **settings: Any
) -> AsyncIterator[Stack]:
    async with SimulatorServer(config) as sim:
        worker_settings = settings_for_test(
            kafka_bootstrap,
            tmp,
            prefix=f"e2e{tmp.name[-8:]}",
            shoptet_api_url=sim.url,
            default_retry_interval_seconds=0.2,
            **settings,
        )
        worker = Worker(worker_settings)
        prefix = worker_settings.kafka_topic_prefix
        shipped = load_topology_dir(TOPOLOGY_DIR, worker.registry)
        topologies = [fast_retries(tv, max_hops=max_hops, prefix=prefix) for tv in shipped]
        await worker.start(deploy=topologies)
        try:
            install = await install_premium(
                worker.rt.store, worker.rt.http, api_url=sim.url, user="shop-e2e", token=sim.premium_token(0)
            )
            yield Stack(sim, worker, install, worker_settings)
        finally:
            await worker.stop()


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = SimulatorConfig(orders=ORDERS, products=40, bucket_size=100_000, job_delay_seconds=0.2)
    async with running_stack(kafka_bootstrap, tmp_path_factory.mktemp("e2e"), config) as running:
        yield running
