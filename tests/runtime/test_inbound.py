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
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import ConsumerRecord

from tests.runtime.helpers import SinkReader
from worker.app import Worker
from worker.catalog import publish_deployment
from worker.envelope import H, Message
from worker.http.app import create_http_app
from worker.inbound import InboundBridge, install_of
from worker.kafka import MAX_RECORD_BYTES, ensure_topics
from worker.router import start_headers
from worker.settings import Settings
from worker.starter import find_start
from worker.store.base import TrashEntry
from worker.topology import TopologyVersion, parse_topology
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
    trashed: list[str] = []
    metrics = SimpleNamespace(trashed=trashed.append)
    bridge = InboundBridge(SimpleNamespace(catalog=catalog, store=store, metrics=metrics))  # type: ignore[arg-type]
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
    assert trashed == ["inbound"]  # in the trashed counter, as a node's trash is


async def test_a_header_without_a_value_goes_to_trash_with_the_record() -> None:
    """An ERP's producer may send a header with a null value: read as absent, not raised (the
    consumer tried such a record again for ever and its partition's commits stopped)."""
    store = Store()
    runtime = SimpleNamespace(catalog=SimpleNamespace(active_all=lambda: []), store=store, metrics=None)
    bridge = InboundBridge(runtime)  # type: ignore[arg-type]
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
    # an install's records start one at a time: 50 at once, a start whose send was retried let the
    # next record go first, and an ordered node applied the ERP's older stock figure last
    assert worker.inbound.per_key == 1
    assert worker.inbound.queue_key is install_of  # per install, not per Kafka key


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


async def test_a_record_for_a_disabled_copy_of_its_application_goes_to_trash_not_lost() -> None:
    """The premium topology on shoptet.orders ran and its addon copy was disabled: an addon shop's
    records were logged and committed, where with every topology of the topic disabled they wait in
    trash for a replay."""
    from tests.runtime.test_manual_run import Sender
    from worker.registry import default_registry
    from worker.topology import parse_topology

    source = "name: {name}\napplication: {app}\nstart:\n  - topic: shoptet.orders\nnodes:\n"
    source += "  sets: {{node: shoptet-product-detail-with-set, next: [out]}}\n  out: {{sink: expanded}}\n"
    sender = Sender(source.format(name="sets", app="shoptet-premium"))
    addon = parse_topology(source.format(name="sets-addon", app="shoptet"), registry=default_registry())
    sender.catalog.add_local(addon, False)  # deployed, disabled
    store = Store()
    bridge = InboundBridge(
        SimpleNamespace(catalog=sender.catalog, store=store, topics=sender.topics, metrics=None, send=sender.send)
    )  # type: ignore[arg-type]
    headers = (("user", b"222651"), ("application", b"shoptet"))
    record = ConsumerRecord("shoptet.orders", 0, 1, 0, 0, b"222651", b'{"code": "1"}', None, 6, 13, headers)

    await bridge.handle(record)

    assert sender.sent == []
    [entry] = store.trash
    assert "serves application 'shoptet' (disabled?)" in entry.error_message and entry.body == {"code": "1"}


#: Bodies ``json`` let through to fail later, every time: the consumer retried them for ever, the
#: partition's commits stopped, and each restart started every later record again.
POISON = {
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,  # json: RecursionError
    "a lone surrogate": b'{"note": "\\ud83d"}',  # an emoji cut in half; json took it, no encoder writes it
}


def inbound_record(value: bytes, offset: int = 1) -> ConsumerRecord[bytes, Any]:
    return ConsumerRecord("erp.in", 0, offset, 0, 0, b"shop-1", value, None, 6, len(value), ())


def bridge_on(store: Store, *names: str) -> tuple[InboundBridge, Any]:
    """A bridge whose topologies (``names``) start on ``erp.in``, and the Sender keeping what it publishes."""
    from tests.runtime.test_manual_run import Sender

    sender = Sender(*(PASS_THROUGH.format(name=name, start="topic: erp.in", sink="out.s") for name in names))
    runtime = SimpleNamespace(catalog=sender.catalog, store=store, topics=sender.topics, metrics=None, send=sender.send)
    return InboundBridge(runtime), sender  # type: ignore[arg-type]


@pytest.mark.parametrize("value", POISON.values(), ids=POISON.keys())
async def test_a_body_that_escaped_the_json_check_goes_to_trash(value: bytes) -> None:
    store = Store()
    bridge, sender = bridge_on(store, "fed")

    await bridge.handle(inbound_record(value))

    [entry] = store.trash
    assert entry.error_class == "MalformedMessage" and "body is not JSON" in entry.error_message
    assert sender.sent == []


def start_size(tv: TopologyVersion, body: Any) -> int:
    """The bytes the producer counts for ``tv``'s start message with ``body`` (its ``max_request_size``)."""
    start = find_start(tv, "topic", "erp.in")
    assert start is not None
    headers = start_headers(tv, tv.topology.start_node(start), user="shop-1", application=None)
    message = Message(body=body, headers=headers)
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(
        message.key(), message.encode_body(), message.kafka_headers()
    )


async def test_a_record_too_large_for_one_of_its_topologies_starts_none_and_goes_to_trash() -> None:
    """The producer refused the start message on every retry; and had the topology whose headers
    are shorter started first, the record's replay from trash would have started it again."""
    store = Store()
    bridge, sender = bridge_on(store, "fed", "fed-" + "long" * 50)
    short, long = sender.catalog.active_all()
    size = MAX_RECORD_BYTES - start_size(short, {"a": ""})
    while start_size(short, {"a": "x" * size}) > MAX_RECORD_BYTES:  # the length's varint grew
        size -= 1
    body = {"a": "x" * size}
    assert start_size(short, body) <= MAX_RECORD_BYTES < start_size(long, body)

    await bridge.handle(inbound_record(json.dumps(body).encode()))

    [entry] = store.trash
    assert entry.error_class == "OutputTooLarge" and "too large to start a process" in entry.error_message
    assert f"topology {long.name!r}" in entry.error_message
    assert sender.sent == []


async def test_a_later_topologys_failed_start_does_not_start_the_earlier_one_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second topology's start failed (the broker took neither of its records), the whole record
    was tried again, and the first topology, already started, started a second time."""
    from aiokafka.errors import RequestTimedOutError

    from worker import starter

    monkeypatch.setattr(starter, "START_RETRY_FIRST_SECONDS", 0.01)
    store = Store()
    bridge, sender = bridge_on(store, "first", "second")
    send, refused = sender.send, []

    async def second_refused_once(topic: str, message: Message) -> asyncio.Future[Any]:
        ack = await send(topic, message)
        name = message.headers.get(H.TOPOLOGY_NAME) or message.body.get("topology")
        if name == "second" and len(refused) < 2:  # its message and its start record
            refused.append(topic)
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(RequestTimedOutError())
            return failed
        return ack

    bridge.rt.send = second_refused_once  # type: ignore[misc]

    await asyncio.wait_for(bridge.handle(inbound_record(b'{"n": 1}')), 10)

    started = [m.headers[H.TOPOLOGY_NAME] for topic, m in sender.sent if topic.startswith("t.node.")]
    assert sorted(started) == ["first", "second", "second"]  # the second tried twice, the first once
    assert len(refused) == 2


async def test_a_start_tried_again_gives_its_record_up_once_the_partition_moved_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tried on inside the handler, it went on after a rebalance had given the record to another
    member, which started both topologies: the second one started twice."""
    from aiokafka.errors import RequestTimedOutError

    from worker import starter
    from worker.consumer import RecordAbandoned

    monkeypatch.setattr(starter, "START_RETRY_FIRST_SECONDS", 0.01)
    store = Store()
    bridge, sender = bridge_on(store, "first", "second")
    bridge.feed = SimpleNamespace(generation=0)  # type: ignore[assignment]
    send = sender.send

    async def second_refused(topic: str, message: Message) -> asyncio.Future[Any]:
        ack = await send(topic, message)
        if (message.headers.get(H.TOPOLOGY_NAME) or message.body.get("topology")) != "second":
            return ack
        bridge.feed.generation = 1  # type: ignore[union-attr]  # a rebalance meanwhile
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(RequestTimedOutError())
        return failed

    bridge.rt.send = second_refused  # type: ignore[misc]

    with pytest.raises(RecordAbandoned):
        await asyncio.wait_for(bridge.handle(inbound_record(b'{"n": 1}')), 10)
    started = [m.headers[H.TOPOLOGY_NAME] for topic, m in sender.sent if topic.startswith("t.node.")]
    assert started == ["first", "second"]  # tried once, then left to the partition's next owner


@pytest.mark.e2e
async def test_poison_inbound_records_go_to_trash_and_their_partition_moves_on(worker_settings: Settings) -> None:
    """Each of these was retried every 5 s for ever: the partition's committed offset stayed put,
    so its lag grew, and every restart started each later record's processes a second time."""
    prefix = worker_settings.kafka_topic_prefix
    inbound, sink = f"{prefix}.erp-poison", f"{prefix}.out-poison"
    worker = Worker(worker_settings, node_names=["test-passthrough"])
    fed = parse_topology(
        PASS_THROUGH.format(name="fed", start=f"topic: {inbound}", sink=sink), registry=worker.registry
    )
    # fits the producer (and the broker) as an inbound record, not once a start message's headers join it
    near_limit = MAX_RECORD_BYTES - DefaultRecordBatchBuilder.estimate_size_in_bytes(b"shop-1", b"", []) - 16
    too_large = b'{"a":"' + b"x" * (near_limit - 8) + b'"}'
    await worker.start(deploy=[fed])
    try:
        for value in (*POISON.values(), too_large, json.dumps({"n": 7}).encode()):
            await (await worker.rt.producer.send(inbound, value, key=b"shop-1"))
        messages = await SinkReader(worker_settings.kafka_bootstrap_servers, sink).collect_until(
            lambda ms: any(m.body.get("n") == 7 for m in ms), timeout=60
        )
        deadline = time.monotonic() + 20
        while True:
            trash = await worker.rt.store.list_trash()
            assert worker.inbound is not None
            lag = worker.inbound.lag()
            if (len(trash) == 3 and set(lag.values()) == {0}) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await worker.stop()
    assert [m.body["n"] for m in messages] == [7]
    reasons = sorted(entry.error_message.split(":")[0] for entry in trash)  # run at once: any order
    assert reasons == ["inbound record body is not JSON"] * 2 + ["inbound record is too large to start a process with"]
    assert set(lag.values()) == {0}, f"the inbound partition's commits stopped: lag {lag}"
