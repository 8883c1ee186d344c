"""Fixtures for the ingress tests: one started Worker per module on the real broker, the HTTP app
over ASGI, and a fresh e-shop per test.

The worker runs no node consumers (``node_names=[]``): the tests read the start nodes' topics
themselves, so what the ingress published (or did not) is exactly what is on those topics. A
worker takes seconds to join its groups, so a module shares one; each test gets its own e-shop
and user and looks only at the records written since it began (``watch``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from tests.support import settings_for_test
from worker.app import Worker
from worker.http.app import create_http_app
from worker.settings import Settings
from worker.store import Install
from worker.topology import TopologyVersion, parse_topology
from worker.webhook_keys import CURRENT_KEY

from .helpers import TopicWatch

API_KEY = "test-api-key-0123456789"
SIGNATURE_KEY = "8a5e881b19ad6cc0bc986587b22e30be"
#: Start nodes of the test topologies: every topic a webhook could be published to.
START_NODES = ("test-passthrough", "test-flaky-once", "test-explode")

#: Premium topology listening to order:create and addon:uninstall (start node test-passthrough).
PREMIUM = """\
name: wh-premium
application: shoptet-premium
imports: [tests.runtime.sample_nodes]
start:
  - webhook: [order:create, addon:uninstall]
  - manual: true
nodes:
  first: {node: test-passthrough, next: [out]}
  out: {sink: wh.out}
"""
#: No application: listens to the event whichever application's webhook it is (start node test-flaky-once).
ANY_APPLICATION = """\
name: wh-any
imports: [tests.runtime.sample_nodes]
start:
  - webhook: order:create
nodes:
  first: {node: test-flaky-once, next: [out]}
  out: {sink: wh.out}
"""
#: The addon application's topology: must never see a premium e-shop's webhook (start node test-explode).
ADDON = """\
name: wh-addon
application: shoptet
imports: [tests.runtime.sample_nodes]
start:
  - webhook: order:create
nodes:
  first: {node: test-explode, next: [out]}
  out: {sink: wh.out}
"""

_eshop_ids = itertools.count(300_001)


@pytest.fixture(scope="module")
def ingress_settings(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("ingress")
    return settings_for_test(
        kafka_bootstrap,
        tmp,
        graceful_timeout_seconds=5,
        api_key=SecretStr(API_KEY),
        webhook_publish_timeout_seconds=5.0,
    )


def topologies(worker: Worker) -> list[TopologyVersion]:
    return [parse_topology(source, registry=worker.registry) for source in (PREMIUM, ANY_APPLICATION, ADDON)]


@pytest.fixture(scope="module")
async def worker(ingress_settings: Settings) -> AsyncIterator[Worker]:
    started = Worker(ingress_settings, node_names=[])
    await started.start(deploy=topologies(started))
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def client(worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_http_app(worker))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress.test") as http:
        yield http


@pytest.fixture
def eshop_id() -> int:
    """A fresh e-shop per test, so that installs, leases and keys never leak between tests."""
    return next(_eshop_ids)


async def add_premium_install(worker: Worker, eshop_id: int, user: str, signature_key: str) -> Install:
    """A premium install of the e-shop, under ``user``, with ``signature_key``."""
    shop = Install(
        user=user,
        application="shoptet-premium",
        eshop_id=str(eshop_id),
        secrets={"token": "premium-token", CURRENT_KEY: signature_key},
    )
    await worker.rt.store.add_install(shop)
    return shop


@pytest.fixture
async def install(worker: Worker, eshop_id: int) -> Install:
    """A premium install of the test's e-shop with a signature key."""
    return await add_premium_install(worker, eshop_id, f"shop-{eshop_id}", SIGNATURE_KEY)


@pytest.fixture
async def watch(worker: Worker) -> TopicWatch:
    """The start nodes' topics as they are when the test begins."""
    topics = {node: worker.rt.topics.node(node) for node in START_NODES}
    return await TopicWatch.begin(worker.rt.bootstrap_servers, topics)
