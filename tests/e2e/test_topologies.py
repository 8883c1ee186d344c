"""Each shipped topology from its start to its sink, against the simulator over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.runtime.helpers import SinkReader
from worker.envelope import H, Message
from worker.starter import find_start, run_manual, start_process

from .conftest import ORDERS, Stack

pytestmark = pytest.mark.e2e


async def from_sink(stack: Stack, topic: str, start: Message, done: Callable[[list[Message]], bool]) -> list[Message]:
    """Messages of one process (same correlation id) on a sink shared by the whole module."""
    reader = SinkReader(stack.settings.kafka_bootstrap_servers, topic)

    def mine(ms: list[Message]) -> list[Message]:
        return [m for m in ms if m.correlation_id == start.correlation_id]

    await reader.collect_until(lambda ms: done(mine(ms)), timeout=120)
    return mine(reader.messages)


async def finished(stack: Stack, start: Message) -> dict[str, Any]:
    """The ``process finished`` event of the process ``start`` began."""
    events = SinkReader(stack.settings.kafka_bootstrap_servers, stack.worker.rt.topics.process_events)
    await events.collect_until(lambda ms: any(m.body.get("root") == start.process_id for m in ms), timeout=60)
    [event] = [m.body for m in events.messages if m.body.get("root") == start.process_id]
    return event


async def eventually(probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def test_order_import_delivers_every_order_detail(stack: Stack) -> None:
    start = await run_manual(stack.worker.rt, "order-import", user=stack.install.user, body={})
    messages = await from_sink(stack, "shoptet.orders", start, lambda ms: len({m.body["code"] for m in ms}) >= ORDERS)
    codes = {m.body["code"] for m in messages}
    assert codes == set(stack.sim.state.eshops[0].orders)
    sample = messages[0].body
    assert {"code", "status", "items", "price"} <= set(sample)  # the detail, not the list item
    assert all(m.headers[H.PARENT_ID] == start.process_id for m in messages)
    watermark = (await stack.worker.rt.store.get_install(stack.install.user, "shoptet-premium")).settings  # type: ignore[union-attr]
    assert "lastRunListOrders" in watermark


async def test_order_sets_expands_what_the_order_topologies_publish(stack: Stack) -> None:
    """shoptet.orders holds one shape (the order detail) whichever topology published it; order
    webhooks expanded product sets and order-sync did not, so the last one decided an ERP's items.
    order-sets publishes the expanded orders on a topic of their own."""
    # from the beginning: an earlier test's import left a watermark past every order
    body = {"from": "2000-01-01T00:00:00+0000"}
    start = await run_manual(stack.worker.rt, "order-import", user=stack.install.user, body=body)
    orders = await from_sink(stack, "shoptet.orders", start, lambda ms: len({m.body["code"] for m in ms}) >= ORDERS)
    with_sets = {m.body["code"] for m in orders if any(i["itemType"] == "product-set" for i in m.body["items"])}
    assert with_sets, "the simulator seeds orders with product sets"

    # this stack's order-sets reads a prefixed copy of shoptet.orders (see fast_retries): fed as the
    # sink would feed it, record for record
    producer = stack.worker.rt.producer
    inbound = stack.inbound("shoptet.orders")
    for message in (m for m in orders if m.body["code"] in with_sets):
        await (await producer.send(inbound, message.encode_body(), key=message.key(), headers=message.kafka_headers()))
    reader = SinkReader(stack.settings.kafka_bootstrap_servers, "shoptet.orders.expanded")
    await reader.collect_until(lambda ms: {m.body["code"] for m in ms} >= with_sets, timeout=120)
    expanded = {m.body["code"]: m.body for m in reader.messages if m.body["code"] in with_sets}
    for code in with_sets:
        assert not [i for i in expanded[code]["items"] if i["itemType"] == "product-set"], code


async def test_order_sync_cron_start_delivers_changed_orders(stack: Stack) -> None:
    rt = stack.worker.rt
    tv = rt.catalog.active("order-sync")
    assert tv is not None
    cron = find_start(tv, "cron")
    assert cron is not None
    start = await start_process(rt, tv, cron, user=stack.install.user, body={})
    messages = await from_sink(stack, "shoptet.orders", start, lambda ms: len({m.body["code"] for m in ms}) >= ORDERS)
    assert {m.body["code"] for m in messages} == set(stack.sim.state.eshops[0].orders)
    install = await rt.store.get_install(stack.install.user, "shoptet-premium")
    assert install is not None and "lastRunListOrderChanges" in install.settings


async def test_product_sync_delivers_product_details(stack: Stack) -> None:
    rt = stack.worker.rt
    tv = rt.catalog.active("product-sync")
    assert tv is not None
    cron = find_start(tv, "cron")
    assert cron is not None
    start = await start_process(rt, tv, cron, user=stack.install.user, body={})
    products = set(stack.sim.state.eshops[0].products)
    messages = await from_sink(stack, "shoptet.products", start, lambda ms: {m.body["guid"] for m in ms} >= products)
    assert {m.body["guid"] for m in messages} == products


async def test_eshop_reference_data_publishes_four_documents(stack: Stack) -> None:
    start = await run_manual(stack.worker.rt, "eshop-reference-data", user=stack.install.user, body={})
    messages = await from_sink(stack, "shoptet.reference", start, lambda ms: len(ms) >= 4)
    nodes = sorted(m.headers[H.PREVIOUS_NODE_ID] for m in messages)
    assert nodes == ["info", "payments", "shipping", "stocks"]
    by_node = {m.headers[H.PREVIOUS_NODE_ID]: m.body for m in messages}
    assert "stocks" in by_node["stocks"]
    assert "data" in by_node["payments"] and "errors" in by_node["payments"]  # Orchesty's whole-body quirk


async def produce(stack: Stack, topic: str, body: Any) -> None:
    future = await stack.worker.rt.producer.send(
        stack.inbound(topic),
        json.dumps(body).encode(),
        key=stack.install.user.encode(),
        headers=[("user", stack.install.user.encode())],
    )
    await future


async def test_stock_update_applies_movements_the_simulator_then_reports(stack: Stack) -> None:
    eshop = stack.sim.state.eshops[0]
    stock_id = eshop.default_stock_id
    code = next(code for (sid, code) in eshop.stock_amounts if sid == stock_id)
    before = eshop.stock_amounts[(stock_id, code)]
    moves = [{"productCode": code, "amountChange": 7}, {"productCode": "NO-SUCH-PRODUCT", "amountChange": 1}]
    await produce(stack, "shoptet.stock-movements", {"stockId": stock_id, "data": moves})
    await eventually(lambda: eshop.stock_amounts[(stock_id, code)] == before + 7)
    # what Shoptet skipped reaches the ERP: it went nowhere before
    results = SinkReader(stack.settings.kafka_bootstrap_servers, "shoptet.stock-movements.results")
    await results.collect_until(
        lambda ms: any("NO-SUCH-PRODUCT" in json.dumps(m.body.get("errors")) for m in ms), timeout=60
    )


async def test_order_status_update_changes_the_order(stack: Stack) -> None:
    eshop = stack.sim.state.eshops[0]
    code, order = next(iter(eshop.orders.items()))
    new_status = next(s["id"] for s in eshop.statuses if s["id"] != order["status"]["id"])
    await produce(stack, "shoptet.order-status-updates", {"id": code, "status": {"data": {"statusId": new_status}}})
    await eventually(lambda: eshop.orders[code]["status"]["id"] == new_status)


async def test_webhooks_subscribe_registers_the_deployed_events(stack: Stack) -> None:
    rt = stack.worker.rt
    await run_manual(rt, "webhooks-subscribe", user=stack.install.user, body={})
    expected = set(rt.catalog.webhook_events())

    async def registered() -> set[str]:
        return {w.event for w in await rt.store.list_webhooks(stack.install.user, "shoptet-premium")}

    deadline = time.monotonic() + 60
    while await registered() != expected:
        assert time.monotonic() < deadline, f"registered {await registered()} != {expected}"
        await asyncio.sleep(0.2)
    assert expected >= {"order:create", "order:update", "job:finished"}


async def test_order_remarks_inbound_sets_the_tracking_number(stack: Stack) -> None:
    eshop = stack.sim.state.eshops[0]
    code = list(eshop.orders)[1]
    await produce(stack, "shoptet.order-remarks", {"id": code, "notes": {"data": {"trackingNumber": "TRK-42"}}})
    await eventually(lambda: eshop.orders[code]["notes"].get("trackingNumber") == "TRK-42")


async def test_webhooks_unsubscribe_removes_what_subscribe_registered(stack: Stack) -> None:
    rt = stack.worker.rt
    eshop_id = stack.sim.state.eshops[0].eshop_id
    subscribed = await run_manual(rt, "webhooks-subscribe", user=stack.install.user, body={})
    await finished(stack, subscribed)  # node types run independently: wait before unsubscribing
    assert stack.sim.state.webhooks.registered(eshop_id)
    await run_manual(rt, "webhooks-unsubscribe", user=stack.install.user, body={})
    await eventually(lambda: not stack.sim.state.webhooks.registered(eshop_id))
    deadline = time.monotonic() + 30
    while await rt.store.list_webhooks(stack.install.user, "shoptet-premium"):
        assert time.monotonic() < deadline, "the store still lists webhooks Shoptet no longer has"
        await asyncio.sleep(0.2)


async def test_disabled_topology_starts_nothing_and_enabled_runs_again(stack: Stack) -> None:
    from worker.catalog import publish_enabled
    from worker.starter import TopologyNotRunnable

    rt = stack.worker.rt
    deployment = rt.catalog.current["eshop-reference-data"]
    await publish_enabled(rt.producer, rt.topics.control, deployment, False)
    await eventually(lambda: rt.catalog.active("eshop-reference-data") is None)
    with pytest.raises(TopologyNotRunnable, match="disabled"):
        await run_manual(rt, "eshop-reference-data", user=stack.install.user, body={})
    await publish_enabled(rt.producer, rt.topics.control, deployment, True)
    await eventually(lambda: rt.catalog.active("eshop-reference-data") is not None)
    start = await run_manual(rt, "eshop-reference-data", user=stack.install.user, body={})
    assert len(await from_sink(stack, "shoptet.reference", start, lambda ms: len(ms) >= 4)) == 4


async def test_metrics_count_messages_and_shoptet_requests(stack: Stack) -> None:
    import httpx

    from worker.http.app import create_http_app

    app = create_http_app(stack.worker)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
        text = (await client.get("/metrics")).text
    assert 'shoptet_worker_messages_total{node="shoptet-get-order-detail",outcome="ok"}' in text
    assert 'shoptet_api_requests_total{endpoint="/api/orders/{id}",method="GET",status="200"}' in text
    assert "shoptet_worker_trash_size 0.0" in text
    assert "shoptet_limiter_wait_seconds_count" in text
    assert 'shoptet_worker_consumer_lag{consumer="shoptet-get-order-detail"}' in text
