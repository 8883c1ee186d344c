"""One simulated shop, one worker with every node and every shipped topology, for the module.

Real parts only: the embedded (or configured) Kafka broker, the simulator over HTTP, a SQLite store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from applications.installs import install_premium
from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from worker.app import Worker
from worker.settings import Settings
from worker.store import Install
from worker.topology import load_topology_dir

TOPOLOGY_DIR = Path(__file__).parents[2] / "topology"
ORDERS = 500


@dataclass
class Stack:
    sim: SimulatorServer
    worker: Worker
    install: Install
    settings: Settings


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    config = SimulatorConfig(orders=ORDERS, products=40, bucket_size=100_000, job_delay_seconds=0.2)
    async with SimulatorServer(config) as sim:
        settings = Settings(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_topic_prefix=f"e2e{tmp.name[-6:]}",
            kafka_partitions=3,
            kafka_session_timeout_ms=6000,
            database_url=f"sqlite:///{tmp / 'store.sqlite3'}",
            secret_key_file=tmp / "secret.key",
            shoptet_api_url=sim.url,
            default_retry_interval_seconds=0.2,
        )
        worker = Worker(settings)
        await worker.start(deploy=load_topology_dir(TOPOLOGY_DIR, worker.registry))
        try:
            install = await install_premium(
                worker.rt.store, worker.rt.http, api_url=sim.url, user="shop-e2e", token=sim.premium_token(0)
            )
            yield Stack(sim, worker, install, settings)
        finally:
            await worker.stop()
