"""Webhook deliveries: triggered by data changes, signed with HMAC-SHA1, retried on failure."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import httpx

from tests.simulator.helpers import Receiver, eventually, premium_headers
from tests.simulator.openapi_conformance import assert_schema_conforms


def verify(key: str, body: bytes, signature: str) -> bool:
    """What a receiver does: recompute the hex HMAC-SHA1 of the raw body with the signature key."""
    return hmac.compare_digest(hmac.new(key.encode(), body, hashlib.sha1).hexdigest(), signature)


async def subscribe(api: httpx.AsyncClient, receiver: Receiver, *events: str) -> None:
    body = {"data": [{"event": e, "url": f"{receiver.url}/{e.replace(':', '-')}"} for e in events]}
    assert (await api.post("/api/webhooks", content=json.dumps(body))).status_code == 201


async def test_admin_changes_deliver_signed_webhooks(make_sim: Any, receiver: Receiver) -> None:
    sim = await make_sim()
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        await subscribe(api, receiver, "order:create", "order:update", "order:delete", "stock:movement")
        key = (await api.post("/api/webhooks/renew-signature-key")).json()["data"]["signatureKey"]
        code = (await api.post("/_sim/orders", json={})).json()["code"]
        await api.patch(f"/_sim/orders/{code}", json={"statusId": -2})
        await api.patch(f"/api/orders/{code}/status", content=json.dumps({"data": {"statusId": -3}}))
        product_code = next(iter(sim.state.eshops[0].variant_index))
        await api.patch("/_sim/stocks/1", json={"data": [{"productCode": product_code, "amountChange": -1}]})
        await api.delete(f"/_sim/orders/{code}")
        calls = await asyncio.to_thread(receiver.wait_for, 5)

    events = []
    for call in calls:
        assert verify(key, call.body, call.headers["shoptet-webhook-signature"])
        assert not verify("another-key", call.body, call.headers["shoptet-webhook-signature"])
        payload = json.loads(call.body)
        assert_schema_conforms("notificationData", payload)
        assert payload["eshopId"] == sim.state.eshops[0].eshop_id
        events.append((call.path, payload["event"], payload["eventInstance"]))
    assert sorted(events) == sorted(
        [
            ("/order-create", "order:create", code),
            ("/order-update", "order:update", code),
            ("/order-update", "order:update", code),
            ("/stock-movement", "stock:movement", "1"),
            ("/order-delete", "order:delete", code),
        ]
    )
    await eventually(lambda: all(d.done for d in sim.state.webhooks.deliveries))
    assert sim.state.stats.webhook_delivered == 5


async def test_failed_delivery_is_retried_with_backoff(make_sim: Any, receiver: Receiver) -> None:
    sim = await make_sim(webhook_max_attempts=3, webhook_retry_backoff_seconds=0.05)
    receiver.fail_first = 2
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        await subscribe(api, receiver, "order:create")
        await api.post("/_sim/orders", json={})
        calls = await asyncio.to_thread(receiver.wait_for, 3)
        assert len({c.body for c in calls}) == 1  # the same notification, three times
        await eventually(lambda: all(d.done for d in sim.state.webhooks.deliveries))
        deliveries = (await api.get("/_sim/webhooks/deliveries")).json()
    assert deliveries[0]["statuses"] == [500, 500, 200] and deliveries[0]["delivered"]
    stats = sim.state.stats.snapshot()["webhooks"]
    assert stats == {"attempts": 3, "delivered": 1, "failed": 0, "byEvent": {"order:create": 1}}


async def test_one_url_per_event(api: httpx.AsyncClient, sim: Any) -> None:
    body = {
        "data": [
            {"event": "order:paid", "url": "http://127.0.0.1:9/a"},
            {"event": "order:paid", "url": "http://127.0.0.1:9/b"},
        ]
    }
    response = await api.post("/api/webhooks", content=json.dumps(body))
    assert response.status_code == 422
    assert "already exists" in response.json()["errors"][0]["message"]
    listed = (await api.get("/api/webhooks")).json()["data"]["webhooks"]
    assert all(w["event"] != "order:paid" for w in listed)  # all or nothing


async def test_registration_refuses_system_and_unknown_events_whole(make_sim: Any, receiver: Receiver) -> None:
    """Shoptet registers system webhooks (``addon:*``) only in the Partners' administration, and no
    misspelled event: a call naming one registers nothing, not even the good events beside it."""
    sim = await make_sim()
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        for bad in ("addon:uninstall", "order:created"):
            body = {"data": [{"event": "order:create", "url": receiver.url}, {"event": bad, "url": receiver.url}]}
            answer = await api.post("/api/webhooks", content=json.dumps(body))
            assert answer.status_code in (400, 422), answer.text
            assert bad in answer.text
        listed = (await api.get("/api/webhooks")).json()["data"]["webhooks"]
    assert listed == []
