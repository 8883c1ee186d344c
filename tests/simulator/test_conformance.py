"""Every endpoint the nodes use answers what Shoptet's OpenAPI description says, success and error alike."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from simulator.server import SimulatorServer
from tests.simulator.helpers import Receiver, premium_headers
from tests.simulator.openapi_conformance import assert_request_conforms, assert_response_conforms

SINCE = "2000-01-01T00:00:00Z"


async def check(client: httpx.AsyncClient, method: str, template: str, url: str, status: int, body: Any = None) -> Any:
    if body is not None:
        assert_request_conforms(method, template, body)
    response = await client.request(method, url, content=None if body is None else json.dumps(body))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert_response_conforms(method, template, status, payload)
    return payload


async def first_order_code(api: httpx.AsyncClient) -> str:
    return str((await api.get("/api/orders")).json()["data"]["orders"][0]["code"])


async def product_of_type(api: httpx.AsyncClient, kind: str) -> dict[str, Any]:
    products = (await api.get("/api/products", params={"itemsPerPage": 1000})).json()["data"]["products"]
    return next(p for p in products if p["type"] == kind)


@pytest.mark.parametrize(
    "include", ["", "orderStatuses,paymentMethods,shippingMethods", "orderStatuses", "unknownSection"]
)
async def test_eshop_info(api: httpx.AsyncClient, include: str) -> None:
    body = await check(api, "GET", "/api/eshop", f"/api/eshop?include={include}", 200)
    sections = set(include.split(",")) & {"orderStatuses", "paymentMethods", "shippingMethods"}
    assert sections <= body["data"].keys()
    assert not ({"orderStatuses", "paymentMethods", "shippingMethods"} - sections) & body["data"].keys()


async def test_orders_list_and_detail(api: httpx.AsyncClient) -> None:
    listing = await check(api, "GET", "/api/orders", "/api/orders?page=2&itemsPerPage=10", 200)
    assert listing["data"]["paginator"]["page"] == 2
    code = listing["data"]["orders"][0]["code"]
    for include in ("", "shippingDetails,notes,surchargeParameters", "paymentTransactions,productFlags"):
        detail = await check(api, "GET", "/api/orders/{code}", f"/api/orders/{code}?include={include}", 200)
        assert detail["data"]["order"]["code"] == code
        assert ("notes" in detail["data"]["order"]) == ("notes" in include)
    await check(api, "GET", "/api/orders/{code}", "/api/orders/0000000000", 404)
    await check(api, "GET", "/api/orders", "/api/orders?page=abc", 400)


async def test_order_changes(api: httpx.AsyncClient) -> None:
    body = await check(
        api, "GET", "/api/orders/changes", f"/api/orders/changes?from={SINCE}&page=1&itemsPerPage=7", 200
    )
    assert body["data"]["paginator"]["itemsOnPage"] == 7
    assert {c["changeType"] for c in body["data"]["changes"]} <= {"add", "edit", "delete"}
    await check(api, "GET", "/api/orders/changes", "/api/orders/changes", 400)  # `from` is required
    await check(api, "GET", "/api/orders/changes", "/api/orders/changes?from=yesterday", 400)


async def test_products(api: httpx.AsyncClient) -> None:
    await check(api, "GET", "/api/products", "/api/products?itemsPerPage=5", 200)
    await check(api, "GET", "/api/products/changes", f"/api/products/changes?from={SINCE}", 200)
    product_set = await product_of_type(api, "product-set")
    detail = await check(
        api, "GET", "/api/products/{guid}", f"/api/products/{product_set['guid']}?include=setItems", 200
    )
    assert detail["data"]["setItems"], "a product set lists its components with include=setItems"
    plain = await check(api, "GET", "/api/products/{guid}", f"/api/products/{product_set['guid']}", 200)
    assert "setItems" not in plain["data"]
    await check(api, "GET", "/api/products/{guid}", "/api/products/00000000-0000-4000-8000-000000000000", 404)


async def test_stocks_payment_shipping(api: httpx.AsyncClient) -> None:
    stocks = await check(api, "GET", "/api/stocks", "/api/stocks", 200)
    assert stocks["data"]["defaultStockId"] in {s["id"] for s in stocks["data"]["stocks"]}
    await check(api, "GET", "/api/payment-methods", "/api/payment-methods", 200)
    await check(api, "GET", "/api/shipping-methods", "/api/shipping-methods", 200)


async def test_order_status_and_notes_writes(sim: SimulatorServer) -> None:
    async with httpx.AsyncClient(base_url=sim.url, headers=_headers(sim, 1)) as api:
        code = await first_order_code(api)
        template = "/api/orders/{code}/status"
        body = await check(
            api, "PATCH", template, f"/api/orders/{code}/status", 200, {"data": {"statusId": -2, "paid": True}}
        )
        assert body["data"]["order"]["status"]["id"] == -2 and body["data"]["order"]["paid"] is True
        await check(api, "PATCH", template, "/api/orders/0000000000/status", 404, {"data": {"statusId": -2}})
        await check(api, "PATCH", template, f"/api/orders/{code}/status", 404, {"data": {"statusId": 999}})
        refused = await api.patch(f"/api/orders/{code}/status", content=json.dumps({"data": {"colour": "red"}}))
        assert refused.status_code == 422
        assert_response_conforms("PATCH", template, 422, refused.json())

        notes = {
            "data": {
                "trackingNumber": "TRACK-1",
                "eshopRemark": "checked",
                "additionalFields": [{"index": 2, "text": "x"}],
            }
        }
        await check(api, "PATCH", "/api/orders/{code}/notes", f"/api/orders/{code}/notes", 200, notes)
        detail = (await api.get(f"/api/orders/{code}?include=notes")).json()["data"]["order"]["notes"]
        assert detail["trackingNumber"] == "TRACK-1" and detail["eshopRemark"] == "checked"
        assert detail["additionalFields"][1]["text"] == "x"
        await check(
            api,
            "PATCH",
            "/api/orders/{code}/notes",
            "/api/orders/0000000000/notes",
            404,
            {"data": {"eshopRemark": "a"}},
        )


async def test_stock_movements(sim: SimulatorServer) -> None:
    async with httpx.AsyncClient(base_url=sim.url, headers=_headers(sim, 1)) as api:
        simple = await product_of_type(api, "product")
        code = simple["guid"]
        detail = (await api.get(f"/api/products/{code}")).json()["data"]
        variant = detail["variants"][0]
        template = "/api/stocks/{stockId}/movements"
        moves = {"data": [{"productCode": variant["code"], "amountChange": 5}, {"productCode": "nope", "quantity": 1}]}
        partly = await check(api, "PATCH", template, "/api/stocks/1/movements", 200, moves)
        assert [e["instance"] for e in partly["errors"]] == ["nope"]
        after = (await api.get(f"/api/products/{code}")).json()["data"]["variants"][0]["stock"]
        assert float(after) == float(variant["stock"]) + 5
        await check(
            api, "PATCH", template, "/api/stocks/1/movements", 400, {"data": [{"productCode": "nope", "quantity": 1}]}
        )


async def test_webhook_endpoints(make_sim: Any, receiver: Receiver) -> None:
    sim = await make_sim()
    async with httpx.AsyncClient(base_url=sim.url, headers=_headers(sim, 0)) as api:
        register = {
            "data": [
                {"event": "order:create", "url": f"{receiver.url}/hook"},
                {"event": "job:finished", "url": f"{receiver.url}/job"},
            ]
        }
        created = await check(api, "POST", "/api/webhooks", "/api/webhooks", 201, register)
        ids = [w["id"] for w in created["data"]["webhooks"]]
        listed = await check(api, "GET", "/api/webhooks", "/api/webhooks", 200)
        assert [w["id"] for w in listed["data"]["webhooks"]] == ids
        duplicate = await api.post(
            "/api/webhooks", content=json.dumps({"data": [{"event": "order:create", "url": "http://x/"}]})
        )
        assert duplicate.status_code == 422
        assert_response_conforms("POST", "/api/webhooks", 422, duplicate.json())
        key = await check(api, "POST", "/api/webhooks/renew-signature-key", "/api/webhooks/renew-signature-key", 200)
        assert key["data"]["signatureKey"] == sim.state.eshops[0].signature_key
        await check(api, "DELETE", "/api/webhooks/{id}", f"/api/webhooks/{ids[0]}", 200)
        await check(api, "DELETE", "/api/webhooks/{id}", f"/api/webhooks/{ids[0]}", 404)


async def test_snapshot_and_job_endpoints(make_sim: Any, receiver: Receiver) -> None:
    sim = await make_sim()
    async with httpx.AsyncClient(base_url=sim.url, headers=_headers(sim, 0)) as api:
        await check(api, "GET", "/api/orders/snapshot", "/api/orders/snapshot", 403)  # no job:finished webhook yet
        await api.post("/api/webhooks", content=json.dumps({"data": [{"event": "job:finished", "url": receiver.url}]}))
        for template in ("/api/orders/snapshot", "/api/products/snapshot"):
            started = await check(api, "GET", template, template, 202)
            job_id = started["data"]["jobId"]
            pending = await check(api, "GET", "/api/system/jobs/{jobId}", f"/api/system/jobs/{job_id}", 200)
            assert pending["data"]["job"]["endpoint"] == template
        await asyncio.to_thread(receiver.wait_for, 2)
        done = await check(api, "GET", "/api/system/jobs/{jobId}", f"/api/system/jobs/{job_id}", 200)
        assert done["data"]["job"]["status"] == "completed"
        await check(api, "GET", "/api/system/jobs/{jobId}", "/api/system/jobs/nojob00", 404)


@pytest.mark.parametrize(
    ("headers", "error_code"),
    [
        ({}, "missing-access-token"),
        ({"Shoptet-Private-API-Token": "100001-p-wrong"}, "invalid-token"),
        ({"Shoptet-Access-Token": "100001-t-wrong"}, "invalid-token"),
    ],
)
async def test_auth_errors_use_the_envelope(sim: SimulatorServer, headers: dict[str, str], error_code: str) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        response = await client.get("/api/orders", headers=headers)
    assert response.status_code == 401
    assert response.json()["errors"][0]["errorCode"] == error_code
    assert_response_conforms("GET", "/api/orders", 401, response.json())


def _headers(sim: SimulatorServer, eshop: int) -> dict[str, str]:
    return premium_headers(sim.premium_token(eshop))


@pytest.mark.parametrize(
    ("method", "template", "url", "body"),
    [
        (
            "PATCH",
            "/api/orders/{code}/status",
            "/api/orders/{code}/status",
            {"data": {"statusId": -2, "colour": "red"}},
        ),
        ("PATCH", "/api/orders/{code}/status", "/api/orders/{code}/status", {"statusId": -2}),
        ("PATCH", "/api/orders/{code}/notes", "/api/orders/{code}/notes", {"data": {"trackingNumber": "x" * 33}}),
        (
            "PATCH",
            "/api/orders/{code}/notes",
            "/api/orders/{code}/notes",
            {"data": {"additionalFields": [{"index": 7, "text": "a"}]}},
        ),
        (
            "PATCH",
            "/api/stocks/{stockId}/movements",
            "/api/stocks/1/movements",
            {"data": [{"productCode": "a", "quantity": 1, "amountChange": 1}]},
        ),
        ("PATCH", "/api/stocks/{stockId}/movements", "/api/stocks/1/movements", {"data": [{"amountChange": 1}]}),
        ("POST", "/api/webhooks", "/api/webhooks", {"data": [{"event": "order:create"}]}),
        (
            "POST",
            "/api/webhooks",
            "/api/webhooks",
            {"data": [{"event": "order:create", "url": "http://x/", "extra": 1}]},
        ),
        (
            "POST",
            "/api/webhooks",
            "/api/webhooks",
            {"data": [{"event": "order:create", "url": "http://x/" + "a" * 2000}]},
        ),
    ],
)
async def test_bodies_the_spec_rejects_are_rejected(
    sim: SimulatorServer, method: str, template: str, url: str, body: dict[str, Any]
) -> None:
    """The simulator accepts no body that Shoptet's schema forbids: it answers 422 and changes nothing."""
    with pytest.raises(AssertionError):
        assert_request_conforms(method, template, body)
    async with httpx.AsyncClient(base_url=sim.url, headers=_headers(sim, 1)) as api:
        code = await first_order_code(api)
        response = await api.request(method, url.replace("{code}", code), content=json.dumps(body))
    assert response.status_code == 422, response.text
    assert_response_conforms(method, template, 422, response.json())
