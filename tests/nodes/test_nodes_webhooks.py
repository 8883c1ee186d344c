"""Webhook subscription: register only what is missing, remember ids, 404 on delete = gone."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from nodes_fakes import Harness, envelope, error_body

from nodes.batches.subscribe_webhooks import ShoptetSubscribeWebhooks
from nodes.batches.unsubscribe_webhooks import ShoptetUnsubscribeWebhooks
from worker.envelope import ResultCode
from worker.errors import RetryableError, StopError
from worker.store import WebhookRegistration


def created(*pairs: tuple[int, str], url: str) -> dict[str, Any]:
    hooks = [
        {"id": i, "event": e, "url": url, "created": "2024-05-20T12:00:00+0200", "updated": None, "sendPayload": None}
        for i, e in pairs
    ]
    return envelope({"webhooks": hooks})


def registration(harness: Harness, webhook_id: int, event: str) -> WebhookRegistration:
    install = harness.install
    return WebhookRegistration(
        user=install.user, application=install.application, event=event, webhook_id=webhook_id, url="u"
    )


async def test_subscribe_registers_missing_events(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    url = f"https://worker.example.com/webhooks/shoptet/{harness.install.application}"
    await harness.store.add_webhook(registration(harness, 7, "order:create"))
    route = shoptet_api.post("/api/webhooks").mock(
        return_value=httpx.Response(201, json=created((8, "job:finished"), (9, "order:update"), url=url))
    )
    ctx = harness.context(webhook_events=frozenset({"order:update", "order:create", "job:finished"}))

    run = await harness.run(ShoptetSubscribeWebhooks(), None, ctx=ctx)

    assert run.result.code == ResultCode.SUCCESS
    assert run.emitted == []
    assert json.loads(route.calls.last.request.content) == {
        "data": [{"event": "job:finished", "url": url}, {"event": "order:update", "url": url}]
    }
    stored = await harness.store.list_webhooks(harness.install.user, harness.install.application)
    assert {(w.webhook_id, w.event) for w in stored} == {(7, "order:create"), (8, "job:finished"), (9, "order:update")}


async def test_subscribe_events_option_and_nothing_missing(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    await harness.store.add_webhook(registration(harness, 7, "order:create"))
    route = shoptet_api.post("/api/webhooks")
    run = await harness.run(
        ShoptetSubscribeWebhooks(),
        None,
        ctx=harness.context(options={"events": ["order:create"]}, webhook_events=frozenset({"order:update"})),
    )
    assert run.result.code == ResultCode.DO_NOT_CONTINUE
    assert route.call_count == 0


async def test_subscribe_422_stops_and_stores_nothing(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    shoptet_api.post("/api/webhooks").mock(return_value=httpx.Response(422, json=error_body("invalid", "bad event")))
    with pytest.raises(StopError):
        await harness.run(ShoptetSubscribeWebhooks(), None, options={"events": ["order:nonsense"]})
    assert await harness.store.list_webhooks(harness.install.user, harness.install.application) == []


async def test_unsubscribe_deletes_each_and_404_counts_as_gone(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    for webhook_id, event in ((7, "order:create"), (8, "order:update"), (9, "job:finished")):
        await harness.store.add_webhook(registration(harness, webhook_id, event))
    ok = shoptet_api.delete("/api/webhooks/7").mock(return_value=httpx.Response(200, json=envelope(None)))
    gone = shoptet_api.delete("/api/webhooks/8").mock(
        return_value=httpx.Response(404, json=error_body("webhook-not-found", "not found"))
    )
    third = shoptet_api.delete("/api/webhooks/9").mock(return_value=httpx.Response(200, json=envelope(None)))

    run = await harness.run(ShoptetUnsubscribeWebhooks(), None)

    assert run.result.code == ResultCode.SUCCESS
    assert (ok.call_count, gone.call_count, third.call_count) == (1, 1, 1)
    assert await harness.store.list_webhooks(harness.install.user, harness.install.application) == []


async def test_unsubscribe_failure_keeps_the_rest(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    await harness.store.add_webhook(registration(harness, 7, "order:create"))
    await harness.store.add_webhook(registration(harness, 8, "order:update"))
    shoptet_api.delete("/api/webhooks/7").mock(return_value=httpx.Response(200, json=envelope(None)))
    shoptet_api.delete("/api/webhooks/8").mock(return_value=httpx.Response(500))
    with pytest.raises(RetryableError):
        await harness.run(ShoptetUnsubscribeWebhooks(), None)
    remaining = await harness.store.list_webhooks(harness.install.user, harness.install.application)
    assert [w.webhook_id for w in remaining] == [8]
