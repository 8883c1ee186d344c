"""Details of Shoptet's behaviour the simulator must not be more lenient about than Shoptet is:
what it would let pass here, a node could get wrong unseen."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.simulator.helpers import Receiver, eventually, premium_headers


async def test_code_lists_name_the_whole_set_and_are_capped(make_sim: Any) -> None:
    """ "Use max. 50 order codes ... No additional filters take effect"; productCodes "cannot be
    combined with productGuids"."""
    sim = await make_sim(orders=60, products=20)
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        orders = (await api.get("/api/orders")).json()["data"]["orders"]
        codes = [o["code"] for o in orders[:2]]
        params = {"orderCodes": ",".join(codes), "creationTimeFrom": "2999-01-01T00:00:00+0000"}
        listed = (await api.get("/api/orders", params=params)).json()["data"]["orders"]
        assert sorted(o["code"] for o in listed) == sorted(codes)

        too_many = ",".join(o["code"] for o in orders[:50]) + ",X1"
        refused = await api.get("/api/orders", params={"orderCodes": too_many})
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["message"].endswith("Expected max. 50 elements, but 51 given.")

        products = (await api.get("/api/products")).json()["data"]["products"]
        both = {"productCodes": "X", "productGuids": products[0]["guid"]}
        refused = await api.get("/api/products", params=both)
        assert refused.status_code == 400 and "but not both" in refused.text
        by_guid = await api.get("/api/products", params={"productGuids": products[0]["guid"], "type": "no-such-type"})
        assert [p["guid"] for p in by_guid.json()["data"]["products"]] == [products[0]["guid"]]


async def test_order_writes_take_the_spec_types_and_at_least_one_field(make_sim: Any) -> None:
    sim = await make_sim()
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        code = (await api.get("/api/orders")).json()["data"]["orders"][0]["code"]
        for path, data in [
            ("status", {}),
            ("notes", {}),
            ("status", {"statusId": "-2"}),
            ("status", {"paid": "yes"}),
            ("status", {"paid": True, "billingMethodId": None}),
            ("status", {"statusId": None}),
            ("notes", {"additionalFields": None}),  # it answered 500 (a retried 5xx for the worker)
            ("notes", {"additionalFields": [{"index": 1, "text": "x" * 256}]}),  # 1-3: at most 255
        ]:
            answer = await api.patch(f"/api/orders/{code}/{path}", content=json.dumps({"data": data}))
            assert answer.status_code == 422, (path, data, answer.text)
        ok = await api.patch(f"/api/orders/{code}/status", content=json.dumps({"data": {"paid": None}}))
        assert ok.status_code == 200, ok.text  # paid is boolean|null
        long_ok = {"additionalFields": [{"index": 4, "text": "x" * 256}]}
        ok = await api.patch(f"/api/orders/{code}/notes", content=json.dumps({"data": long_ok}))
        assert ok.status_code == 200, ok.text  # only fields 1-3 are capped


async def test_setting_what_an_order_has_changes_nothing_and_cancel_is_its_own_event(
    make_sim: Any, receiver: Receiver
) -> None:
    """ "If you try to set the status that the order already has, no change is done"; and
    ``order:cancel`` "is emitted when order status is set to canceled"."""
    sim = await make_sim()
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        body = {"data": [{"event": "order:cancel", "url": receiver.url}]}
        assert (await api.post("/api/webhooks", content=json.dumps(body))).status_code == 201
        order = (await api.get("/api/orders")).json()["data"]["orders"][0]
        code, status = order["code"], order["status"]["id"]
        feed = sim.state.eshops[0].order_changes
        changes = feed.since(datetime(2000, 1, 1, tzinfo=UTC))
        before = (await api.get(f"/api/orders/{code}")).json()["data"]["order"]["changeTime"]

        same = await api.patch(f"/api/orders/{code}/status", content=json.dumps({"data": {"statusId": status}}))
        assert same.status_code == 200
        assert (await api.get(f"/api/orders/{code}")).json()["data"]["order"]["changeTime"] == before
        assert feed.since(datetime(2000, 1, 1, tzinfo=UTC)) == changes

        cancel = await api.patch(f"/api/orders/{code}/status", content=json.dumps({"data": {"statusId": -4}}))
        assert cancel.status_code == 200
        calls = await asyncio.to_thread(receiver.wait_for, 1)
    assert [json.loads(c.body)["event"] for c in calls] == ["order:cancel"]
    await eventually(lambda: all(d.done for d in sim.state.webhooks.deliveries))


async def test_include_ignores_case(make_sim: Any) -> None:
    """``include``: "no upper/lower case differentiation"."""
    sim = await make_sim()
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        code = (await api.get("/api/orders")).json()["data"]["orders"][0]["code"]
        order = (await api.get(f"/api/orders/{code}", params={"include": "NOTES,ShippingDetails"})).json()
    assert {"notes", "shippingDetails"} <= set(order["data"]["order"])


async def test_stock_movements_refuse_what_shoptet_refuses(make_sim: Any) -> None:
    sim = await make_sim()
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        products = (await api.get("/api/products", params={"itemsPerPage": 1000})).json()["data"]["products"]
        product_set = next(p for p in products if p["type"] == "product-set")
        detail = (await api.get(f"/api/products/{product_set['guid']}")).json()["data"]
        set_code = detail["variants"][0]["code"]
        moves = {"data": [{"productCode": set_code, "amountChange": 1}]}
        answer = (await api.patch("/api/stocks/1/movements", content=json.dumps(moves))).json()
        assert [e["errorCode"] for e in answer["errors"]] == ["stock-change-not-allowed"]
        for amount in ("1", True):
            bad = {"data": [{"productCode": set_code, "amountChange": amount}]}
            refused = await api.patch("/api/stocks/1/movements", content=json.dumps(bad))
            assert refused.status_code == 422, refused.text


async def test_events_shoptet_does_not_register_together_are_409(make_sim: Any) -> None:
    """openapi.yaml's event table: order:cancel with order:update, customer:update with
    customer:enableOrders or customer:disableOrders "throws 409 Conflict"."""
    sim = await make_sim()
    url = "https://worker.example.com/webhooks/shoptet/shoptet-premium"
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:

        async def register(*events: str) -> int:
            body = {"data": [{"event": event, "url": url} for event in events]}
            return (await api.post("/api/webhooks", content=json.dumps(body))).status_code

        assert await register("customer:update", "customer:enableOrders") == 409
        assert await register("customer:enableOrders", "customer:disableOrders") == 201
        assert await register("customer:update") == 409  # with one the e-shop has
        assert await register("order:cancel") == 201
        assert await register("order:update") == 409
