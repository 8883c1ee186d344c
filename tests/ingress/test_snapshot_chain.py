"""The job:finished chain through the real ingress: simulator -> webhook over HTTP -> Kafka -> sink.

Everything is real: the simulator signs its deliveries with the e-shop's key (which the
webhooks-subscribe topology obtained by renewing it), uvicorn serves the worker's HTTP app on a free port
that ``public_base_url`` points at, the webhooks-subscribe topology registers that URL, and the
orders arrive on the ``shoptet.orders.snapshot`` sink through the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from applications.installs import install_premium
from nodes import shoptet
from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from tests.runtime.helpers import SinkReader
from tests.support import settings_for_test
from worker.app import Worker
from worker.envelope import Message
from worker.http.app import create_http_app
from worker.settings import Settings
from worker.starter import run_manual
from worker.topology import load_topology_file
from worker.webhook_keys import CURRENT_KEY

pytestmark = pytest.mark.e2e

TOPOLOGIES = Path(__file__).parents[2] / "topology"
NODES = [
    "shoptet-get-all-orders",
    "shoptet-get-all-products",
    "shoptet-job-finished-webhook",
    "shoptet-parse-json-lines",
    "shoptet-subscribe-webhooks",
]
ORDERS = 120


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.asynccontextmanager
async def _serve(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    """uvicorn on this test's loop: the app shares the worker's producer, which belongs to it."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "the HTTP app did not start"
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _eventually(probe: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Chain:
    """What differs between the order and the product snapshot chains."""

    topology: str
    sink: str
    id_field: str
    watermark: str

    def ids(self, messages: list[Message], user: str) -> set[str]:
        return {entity[self.id_field] for m in messages if m.user == user for entity in m.body}


ORDERS_CHAIN = Chain("order-snapshot", "shoptet.orders.snapshot", "code", shoptet.LAST_RUN_ORDER_CHANGES)
PRODUCTS_CHAIN = Chain("product-snapshot", "shoptet.products.snapshot", "guid", shoptet.LAST_RUN_PRODUCT_CHANGES)


@pytest.mark.parametrize("chain", [ORDERS_CHAIN, PRODUCTS_CHAIN], ids=["orders", "products"])
async def test_snapshot_reaches_the_sink_through_the_webhook(
    kafka_bootstrap: str, tmp_path: Path, chain: Chain
) -> None:
    config = SimulatorConfig(orders=ORDERS, products=ORDERS, job_delay_seconds=0.2, bucket_size=100_000)
    sock = _free_socket()
    user = f"shop-{uuid.uuid4().hex[:8]}"
    async with SimulatorServer(config) as sim:
        settings = settings_for_test(
            kafka_bootstrap,
            tmp_path,
            shoptet_api_url=sim.url,
            public_base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
            default_retry_interval_seconds=0.2,
            graceful_timeout_seconds=5,
        )
        worker = Worker(settings, node_names=NODES)
        deploy = [
            load_topology_file(TOPOLOGIES / f"{n}.yaml", worker.registry)
            for n in (chain.topology, "webhooks-subscribe")
        ]
        await worker.start(deploy=deploy)
        try:
            rt = worker.rt
            install = await install_premium(rt.store, rt.http, api_url=sim.url, user=user, token=sim.premium_token(0))
            assert CURRENT_KEY not in install.secrets  # subscribe must get it, or every webhook is a 401
            # no change-feed watermark yet: the snapshot is a full export, and its completion sets one
            eshop_id = sim.state.eshops[0].eshop_id

            async with _serve(create_http_app(worker), sock):
                await run_manual(rt, "webhooks-subscribe", user=user, body={})

                async def subscribed() -> bool:
                    return sim.state.webhooks.has(eshop_id, "job:finished")

                await _eventually(subscribed)
                stored = await rt.store.get_install(user, "shoptet-premium")
                assert stored is not None and stored.secrets[CURRENT_KEY] == sim.state.eshops[0].signature_key
                [hook] = [w for w in sim.state.webhooks.registered(eshop_id) if w.event == "job:finished"]
                assert hook.url == f"{settings.public_base_url}/webhooks/shoptet/shoptet-premium"

                requested = datetime.now(UTC).replace(microsecond=0)
                await run_manual(rt, chain.topology, user=user, body={})
                reader = SinkReader(kafka_bootstrap, chain.sink)
                messages = await reader.collect_until(lambda ms: len(chain.ids(ms, user)) >= ORDERS, timeout=90)

                eshop = sim.state.eshops[0]
                expected = set(eshop.orders if chain is ORDERS_CHAIN else eshop.products)
                deliveries = [d for d in sim.state.webhooks.deliveries if d.url == hook.url]
                assert deliveries and all(d.statuses == [200] for d in deliveries), [d.statuses for d in deliveries]
        finally:
            await worker.stop()

    assert len(expected) == ORDERS
    assert chain.ids(messages, user) == expected
    stored = await _install_settings(settings, user)
    assert shoptet.parse_time(stored[chain.watermark]) >= requested  # the job's creation time


async def _install_settings(settings: Settings, user: str) -> dict[str, Any]:
    from worker.store import open_store

    store = await open_store(settings)
    try:
        install = await store.get_install(user, "shoptet-premium")
        assert install is not None
        return install.settings
    finally:
        await store.close()
