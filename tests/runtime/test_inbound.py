"""Inbound topics: a record that no active topology starts on is kept in trash, not dropped, and a
deploy that brings the first inbound start is consumed by a running worker."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiokafka.structs import ConsumerRecord

from tests.runtime.helpers import SinkReader
from worker.app import Worker
from worker.catalog import publish_deployment
from worker.envelope import H
from worker.http.app import create_http_app
from worker.inbound import InboundBridge
from worker.kafka import ensure_topics
from worker.settings import Settings
from worker.store.base import TrashEntry
from worker.topology import parse_topology
from worker.trash import replay_message


class Store:
    def __init__(self) -> None:
        self.trash: list[TrashEntry] = []

    async def add_trash(self, entry: TrashEntry) -> int:
        self.trash.append(entry)
        return len(self.trash)


async def test_a_record_for_a_disabled_topology_goes_to_trash_for_replay() -> None:
    store = Store()
    catalog = SimpleNamespace(active_all=lambda: [])  # the topology that starts on it is disabled
    bridge = InboundBridge(SimpleNamespace(catalog=catalog, store=store))  # type: ignore[arg-type]
    record: ConsumerRecord[bytes, Any] = ConsumerRecord(
        "erp.order-requests", 0, 7, 0, 0, b"shop-1", b'{"code": "1"}', None, 6, 13, ()
    )

    await bridge.handle(record)

    [entry] = store.trash
    assert entry.topic == "erp.order-requests"
    assert "no active topology" in entry.error_message
    assert entry.user == "shop-1"  # the key: `trash list` showed "-" for whose record it was
    replayed = replay_message(entry)  # replayable as stored, without an edited body
    assert replayed.body == {"code": "1"} and replayed.user == "shop-1"


async def test_a_header_without_a_value_goes_to_trash_with_the_record() -> None:
    """An ERP's producer may send a header with a null value: read as absent, not raised (the
    consumer tried such a record again for ever and its partition's commits stopped)."""
    store = Store()
    bridge = InboundBridge(SimpleNamespace(catalog=SimpleNamespace(active_all=lambda: []), store=store))  # type: ignore[arg-type]
    headers = (("user", None), ("application", None), ("source", None))
    record: ConsumerRecord[bytes, Any] = ConsumerRecord(
        "erp.order-requests", 0, 8, 0, 0, None, b"{not json", None, -1, 9, headers
    )

    await bridge.handle(record)

    [entry] = store.trash
    assert "names no install" in entry.error_message
    assert entry.headers == {"user": "", "application": "", "source": ""}


@pytest.mark.e2e
async def test_a_deploy_with_the_first_inbound_start_is_consumed_without_a_restart(worker_settings: Settings) -> None:
    """A worker that started with no ``topic:`` start used to need a restart before it read one."""
    prefix = worker_settings.kafka_topic_prefix
    inbound, sink = f"{prefix}.erp-requests", f"{prefix}.out"
    worker = Worker(worker_settings, node_names=["test-passthrough"])
    manual = parse_topology(
        PASS_THROUGH.format(name="manual-only", start="manual: true", sink=sink), registry=worker.registry
    )
    await worker.start(deploy=[manual])
    try:
        assert worker.inbound is None
        fed = parse_topology(
            PASS_THROUGH.format(name="fed", start=f"topic: {inbound}", sink=sink), registry=worker.registry
        )
        await ensure_topics(worker_settings, worker.rt.bootstrap_servers, fed.own_topics())
        await publish_deployment(worker.rt.producer, worker.rt.topics.control, fed)
        deadline = time.monotonic() + 30
        while worker.inbound is None:  # the follower applies the deploy
            assert time.monotonic() < deadline, "the deploy never started an inbound consumer"
            await asyncio.sleep(0.01)
        # joining its group takes seconds; meanwhile the worker stays ready (webhooks keep coming in)
        assert not worker.inbound.assigned.is_set()
        app = create_http_app(worker)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker") as client:
            assert (await client.get("/readyz")).status_code == 200
        record = await worker.rt.producer.send(inbound, json.dumps({"n": 7}).encode(), key=b"shop-1")
        await record

        messages = await SinkReader(worker_settings.kafka_bootstrap_servers, sink).collect_until(
            lambda ms: any(m.body.get("n") == 7 for m in ms), timeout=60
        )
    finally:
        await worker.stop()
    [message] = messages
    assert message.user == "shop-1" and message.headers[H.TOPOLOGY_NAME] == "fed"
    assert worker.inbound is not None and worker.inbound.topics == [inbound]


async def test_one_deploy_with_two_inbound_topologies_consumes_both(worker_settings: Settings) -> None:
    """The second topology's topics were subscribed while the consumer the first one started was
    still starting: aiokafka's fetcher died, and nothing on either topic was ever read."""
    prefix = worker_settings.kafka_topic_prefix
    first, second, sink = f"{prefix}.erp-a", f"{prefix}.erp-b", f"{prefix}.out2"
    worker = Worker(worker_settings, node_names=["test-passthrough"])
    versions = [
        parse_topology(PASS_THROUGH.format(name=name, start=f"topic: {topic}", sink=sink), registry=worker.registry)
        for name, topic in (("fed-a", first), ("fed-b", second))
    ]
    await worker.start(deploy=[])
    try:
        await ensure_topics(worker_settings, worker.rt.bootstrap_servers, [first, second, sink])
        for tv in versions:
            await publish_deployment(worker.rt.producer, worker.rt.topics.control, tv)
        for n, topic in enumerate((first, second)):
            await (await worker.rt.producer.send(topic, json.dumps({"n": n}).encode(), key=b"shop-1"))

        messages = await SinkReader(worker_settings.kafka_bootstrap_servers, sink).collect_until(
            lambda ms: {m.body.get("n") for m in ms} == {0, 1}, timeout=60
        )
    finally:
        await worker.stop()
    assert sorted(m.headers[H.TOPOLOGY_NAME] for m in messages) == ["fed-a", "fed-b"]


PASS_THROUGH = """\
name: {name}
imports: [tests.runtime.sample_nodes]
start:
  - {start}
nodes:
  mid: {{node: test-passthrough, next: [out]}}
  out: {{sink: {sink}}}
"""


async def test_a_record_of_another_application_starts_only_the_topologies_serving_it() -> None:
    """Addon copies of the shipped topologies publish to the same sinks: a premium topology that
    starts on shoptet.orders took each addon order for a premium install and sent it to trash."""
    from tests.runtime.test_manual_run import Sender

    premium = "name: sets\napplication: shoptet-premium\nstart:\n  - topic: shoptet.orders\nnodes:\n"
    premium += "  sets: {node: shoptet-product-detail-with-set, next: [out]}\n  out: {sink: expanded}\n"
    sender = Sender(premium)
    store = Store()
    bridge = InboundBridge(
        SimpleNamespace(catalog=sender.catalog, store=store, topics=sender.topics, metrics=None, send=sender.send)
    )  # type: ignore[arg-type]

    def order(application: str) -> ConsumerRecord[bytes, Any]:
        headers = (("user", b"222651"), ("application", application.encode()))
        return ConsumerRecord("shoptet.orders", 0, 1, 0, 0, b"222651", b'{"code": "1"}', None, 6, 13, headers)

    await bridge.handle(order("shoptet"))
    assert sender.sent == [] and store.trash == []
    await bridge.handle(order("shoptet-premiun"))  # not an application: kept, with the reason
    [typo] = store.trash
    assert "unknown application 'shoptet-premiun'" in typo.error_message and sender.sent == []
    await bridge.handle(order("shoptet-premium"))
    [(topic, start), _] = sender.sent  # the start, then its ledger record
    assert topic == "t.node.shoptet-product-detail-with-set"
    assert start.headers[H.APPLICATION] == "shoptet-premium" and start.user == "222651"
