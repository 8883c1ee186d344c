"""Webhook subscription: register only what Shoptet is missing, keep the stored ids in line with
Shoptet's, 404 on delete = gone."""

from __future__ import annotations

import json
from collections.abc import Callable
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
from worker.webhook_events import EXCLUSIVE_WEBHOOK_EVENTS, SHOPTET_WEBHOOK_EVENTS, SYSTEM_WEBHOOK_EVENTS
from worker.webhook_keys import CURRENT_KEY


@pytest.fixture(autouse=True)
def renew_key(shoptet_api: respx.MockRouter) -> respx.Route:
    """Shoptet's key renewal, answered with a fixed key (subscribe asks for one when none is stored)."""
    return shoptet_api.post("/api/webhooks/renew-signature-key").mock(
        return_value=httpx.Response(200, json=envelope({"signatureKey": "k-from-shoptet"}))
    )


def hooks(*pairs: tuple[int, str], url: str) -> list[dict[str, Any]]:
    return [
        {"id": i, "event": e, "url": url, "created": "2024-05-20T12:00:00+0200", "updated": None, "sendPayload": None}
        for i, e in pairs
    ]


def created(*pairs: tuple[int, str], url: str) -> dict[str, Any]:
    return envelope({"webhooks": hooks(*pairs, url=url)})


def listed(*pages: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """GET /api/webhooks answered page by page."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        items = pages[page - 1] if page <= len(pages) else []
        paginator = {"totalCount": sum(map(len, pages)), "page": page, "pageCount": max(1, len(pages))}
        paginator |= {"itemsOnPage": len(items), "itemsPerPage": int(request.url.params["itemsPerPage"])}
        return httpx.Response(200, json=envelope({"webhooks": items, "paginator": paginator}))

    return answer


def registration(harness: Harness, webhook_id: int, event: str) -> WebhookRegistration:
    install = harness.install
    return WebhookRegistration(
        user=install.user, application=install.application, event=event, webhook_id=webhook_id, url="u"
    )


def our_url(harness: Harness) -> str:
    return f"https://worker.example.com/webhooks/shoptet/{harness.install.application}"


async def stored_ids(harness: Harness) -> set[tuple[int, str]]:
    stored = await harness.store.list_webhooks(harness.install.user, harness.install.application)
    return {(w.webhook_id, w.event) for w in stored}


async def test_subscribe_registers_missing_events(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    url = our_url(harness)
    await harness.store.add_webhook(registration(harness, 7, "order:create"))
    shoptet_api.get("/api/webhooks").mock(side_effect=listed(hooks((7, "order:create"), url=url)))
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
    assert await stored_ids(harness) == {(7, "order:create"), (8, "job:finished"), (9, "order:update")}


async def test_subscribe_gets_a_signature_key_before_registering(
    harness: Harness, shoptet_api: respx.MockRouter, renew_key: respx.Route
) -> None:
    """Without a stored key the ingress answers 401 to every webhook, and Shoptet hands a key out
    only by renewing it: subscribe renews first, so the first delivery is already verifiable."""
    url = our_url(harness)
    shoptet_api.get("/api/webhooks").mock(side_effect=listed())
    post = shoptet_api.post("/api/webhooks").mock(
        return_value=httpx.Response(201, json=created((8, "order:create"), url=url))
    )
    assert CURRENT_KEY not in harness.install.secrets

    await harness.run(ShoptetSubscribeWebhooks(), None, options={"events": ["order:create"]})

    assert renew_key.call_count == 1
    assert shoptet_api.calls[0].request.url.path == "/api/webhooks/renew-signature-key"
    assert post.call_count == 1
    stored = await harness.store.get_install(harness.install.user, harness.install.application)
    assert stored is not None and stored.secrets[CURRENT_KEY] == "k-from-shoptet"


async def test_subscribe_keeps_a_stored_signature_key(
    harness: Harness, shoptet_api: respx.MockRouter, renew_key: respx.Route
) -> None:
    harness.install.secrets[CURRENT_KEY] = "k-we-have"
    shoptet_api.get("/api/webhooks").mock(side_effect=listed(hooks((7, "order:create"), url=our_url(harness))))
    run = await harness.run(ShoptetSubscribeWebhooks(), None, options={"events": ["order:create"]})
    assert run.result.code == ResultCode.DO_NOT_CONTINUE
    assert renew_key.call_count == 0


async def test_subscribe_events_option_and_nothing_missing(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    await harness.store.add_webhook(registration(harness, 7, "order:create"))
    shoptet_api.get("/api/webhooks").mock(side_effect=listed(hooks((7, "order:create"), url=our_url(harness))))
    route = shoptet_api.post("/api/webhooks")
    run = await harness.run(
        ShoptetSubscribeWebhooks(),
        None,
        ctx=harness.context(options={"events": ["order:create"]}, webhook_events=frozenset({"order:update"})),
    )
    assert run.result.code == ResultCode.DO_NOT_CONTINUE
    assert route.call_count == 0


async def test_subscribe_goes_by_what_shoptet_has(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    """Stored 5 was deleted on Shoptet's side: registered again. Shoptet's 6 (our URL) was never
    recorded: adopted, not registered twice. 11 points elsewhere: left alone, never adopted."""
    url = our_url(harness)
    await harness.store.add_webhook(registration(harness, 5, "order:update"))
    listing = shoptet_api.get("/api/webhooks").mock(
        side_effect=listed(hooks((6, "order:create"), url=url), hooks((11, "job:finished"), url="https://other.test/"))
    )
    route = shoptet_api.post("/api/webhooks").mock(
        return_value=httpx.Response(201, json=created((12, "order:update"), url=url))
    )
    ctx = harness.context(webhook_events=frozenset({"order:create", "order:update"}))

    run = await harness.run(ShoptetSubscribeWebhooks(), None, ctx=ctx)

    assert run.result.code == ResultCode.SUCCESS
    assert [call.request.url.params["page"] for call in listing.calls] == ["1", "2"]
    assert json.loads(route.calls.last.request.content) == {"data": [{"event": "order:update", "url": url}]}
    assert await stored_ids(harness) == {(6, "order:create"), (12, "order:update")}


async def test_subscribe_registers_the_free_events_and_stops_on_ones_another_url_holds(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Shoptet keeps one URL per event and refuses a whole POST with one taken event in it (422), so
    a taken event must not hold up the free ones; the stop names it for the operator."""
    url = our_url(harness)
    orchesty = "https://orchesty.example.com/webhook/topologies/order-webhook/nodes/start/token/s3cr3t"
    shoptet_api.get("/api/webhooks").mock(side_effect=listed(hooks((11, "order:update"), url=orchesty)))
    route = shoptet_api.post("/api/webhooks").mock(
        return_value=httpx.Response(201, json=created((12, "order:create"), url=url))
    )
    ctx = harness.context(webhook_events=frozenset({"order:create", "order:update"}))

    with pytest.raises(StopError) as stopped:
        await harness.run(ShoptetSubscribeWebhooks(), None, ctx=ctx)

    assert json.loads(route.calls.last.request.content) == {"data": [{"event": "order:create", "url": url}]}
    assert await stored_ids(harness) == {(12, "order:create")}
    reason = stopped.value.message
    assert "registered order:create" in reason
    assert "order:update -> https://orchesty.example.com/… (webhook 11)" in reason
    assert "s3cr3t" not in reason  # another integration's webhook URL may hold its secret


async def test_subscribe_stops_without_posting_when_every_missing_event_is_taken(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    shoptet_api.get("/api/webhooks").mock(
        side_effect=listed(hooks((11, "order:update"), url="http://user:pw@old.test:8080/hooks?key=k"))
    )
    route = shoptet_api.post("/api/webhooks")
    with pytest.raises(StopError, match=r"order:update -> http://old.test:8080/… \(webhook 11\)"):
        await harness.run(ShoptetSubscribeWebhooks(), None, options={"events": ["order:update"]})
    assert route.call_count == 0
    assert await stored_ids(harness) == set()


async def test_subscribe_leaves_out_events_shoptet_does_not_register_together(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """order:cancel with order:update is 409 for the whole call: job:finished, wanted as well, was
    never registered either, and every replay failed the same way."""
    url = our_url(harness)
    shoptet_api.get("/api/webhooks").mock(side_effect=listed(hooks((5, "customer:enableOrders"), url=url)))
    route = shoptet_api.post("/api/webhooks").mock(
        return_value=httpx.Response(201, json=created((12, "job:finished"), (13, "order:update"), url=url))
    )
    wanted = ["customer:update", "job:finished", "order:cancel", "order:update"]

    with pytest.raises(StopError) as stopped:
        await harness.run(ShoptetSubscribeWebhooks(), None, options={"events": wanted})

    posted = [item["event"] for item in json.loads(route.calls.last.request.content)["data"]]
    assert posted == ["job:finished", "order:update"]  # the general one of a wanted pair
    reason = stopped.value.message
    assert reason.startswith("registered job:finished, order:update;")
    # the one Shoptet has stays, and the reason says which webhook holds it
    assert "customer:update (with customer:enableOrders, this worker's webhook 5" in reason
    assert "order:cancel (with order:update, wanted too" in reason


async def test_subscribe_422_stops_and_stores_nothing(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    shoptet_api.get("/api/webhooks").mock(side_effect=listed())
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


async def test_subscribe_records_our_url_when_shoptet_leaves_it_out(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    shoptet_api.get("/api/webhooks").mock(side_effect=listed())
    answer = {"webhooks": [{"id": 8, "event": "order:create", "created": "2024-05-20T12:00:00+0200"}]}
    shoptet_api.post("/api/webhooks").mock(return_value=httpx.Response(201, json=envelope(answer)))
    await harness.run(ShoptetSubscribeWebhooks(), None, options={"events": ["order:create"]})
    [stored] = await harness.store.list_webhooks(harness.install.user, harness.install.application)
    assert (stored.webhook_id, stored.url) == (8, our_url(harness))


async def test_subscribe_registers_at_most_50_a_call(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    """Shoptet registers up to 50 webhooks a call; a longer list in one call is refused whole."""
    url = our_url(harness)
    clashing = {pair[1] for pair in EXCLUSIVE_WEBHOOK_EVENTS}  # not registered with their pair's other
    wanted = sorted(e for e in SHOPTET_WEBHOOK_EVENTS if e not in SYSTEM_WEBHOOK_EVENTS | clashing)[:60]
    next_id = iter(range(1, 1000))

    def register(request: httpx.Request) -> httpx.Response:
        data = json.loads(request.content)["data"]
        if len(data) > 50:
            return httpx.Response(422, json=error_body("validation", "up to 50 webhooks"))
        return httpx.Response(201, json=created(*((next(next_id), w["event"]) for w in data), url=url))

    shoptet_api.get("/api/webhooks").mock(side_effect=listed())
    route = shoptet_api.post("/api/webhooks").mock(side_effect=register)

    run = await harness.run(ShoptetSubscribeWebhooks(), None, ctx=harness.context(webhook_events=frozenset(wanted)))

    assert run.result.code == ResultCode.SUCCESS
    assert [len(json.loads(c.request.content)["data"]) for c in route.calls] == [50, 10]
    assert {event for _, event in await stored_ids(harness)} == set(wanted)


async def test_subscribe_refuses_system_events_named_in_its_options(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    shoptet_api.get("/api/webhooks").mock(side_effect=listed())
    route = shoptet_api.post("/api/webhooks")
    with pytest.raises(StopError, match="addon:uninstall: Shoptet's system webhooks"):
        await harness.run(ShoptetSubscribeWebhooks(), None, options={"events": ["order:create", "addon:uninstall"]})
    assert route.call_count == 0


async def test_an_events_option_that_is_not_a_list_stops_rather_than_match_by_substring(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """``events: "order:update"`` matched ``"order:up" in "order:update"``-style: a typo removed or
    kept the wrong webhooks in silence."""
    await harness.store.add_webhook(registration(harness, 7, "order:update"))
    route = shoptet_api.delete("/api/webhooks/7")
    with pytest.raises(StopError, match="option `events` must be a list of names"):
        await harness.run(ShoptetUnsubscribeWebhooks(), None, options={"events": "order:updated"})
    assert route.call_count == 0
    assert await stored_ids(harness) == {(7, "order:update")}


def test_unsubscribing_runs_for_a_disabled_install() -> None:
    """Disable, then remove: `install remove` asks for webhooks-unsubscribe first, which refused a
    disabled install, so the shop had to be enabled again (its crons and webhooks with it)."""
    assert ShoptetUnsubscribeWebhooks.accepts_disabled_install
