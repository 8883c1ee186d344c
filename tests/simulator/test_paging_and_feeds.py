"""Paging clamped per endpoint, and change feeds that list only the last change of each entity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.simulator.helpers import premium_headers

SINCE = "2000-01-01T00:00:00Z"


async def test_items_per_page_is_clamped_to_each_endpoints_maximum(api: httpx.AsyncClient) -> None:
    cases = [
        ("/api/orders?itemsPerPage=1000", 50),
        ("/api/orders", 50),
        (f"/api/orders/changes?from={SINCE}&itemsPerPage=5000", 1000),
        (f"/api/orders/changes?from={SINCE}", 20),
        ("/api/products?itemsPerPage=5000", 1000),
        ("/api/products", 20),
        (f"/api/products/changes?from={SINCE}&itemsPerPage=5000", 1000),
        ("/api/webhooks?itemsPerPage=9999", 500),
    ]
    for url, expected in cases:
        paginator = (await api.get(url)).json()["data"]["paginator"]
        assert paginator["itemsPerPage"] == expected, url


async def test_page_count_walks_every_order_once(api: httpx.AsyncClient) -> None:
    seen: list[str] = []
    page, page_count = 1, 1
    while page <= page_count:
        data = (await api.get("/api/orders", params={"page": page, "itemsPerPage": 100})).json()["data"]
        page_count = data["paginator"]["pageCount"]
        seen += [o["code"] for o in data["orders"]]
        page += 1
    assert len(seen) == len(set(seen)) == data["paginator"]["totalCount"] == 120
    assert page_count == 3
    beyond = (await api.get("/api/orders", params={"page": 99})).json()["data"]
    assert beyond["orders"] == [] and beyond["paginator"]["itemsOnPage"] == 0


async def test_creation_time_filter(api: httpx.AsyncClient) -> None:
    orders = (await api.get("/api/orders", params={"page": 2})).json()["data"]["orders"]
    pivot = orders[0]["creationTime"]
    later = (await api.get("/api/orders", params={"creationTimeFrom": pivot, "itemsPerPage": 50})).json()["data"]
    assert later["paginator"]["totalCount"] == 120 - 50
    assert all(o["creationTime"] >= pivot for o in later["orders"])


async def test_change_feed_keeps_only_the_last_change(make_sim: Any) -> None:
    sim = await make_sim()
    started = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        created = (await api.post("/_sim/orders", json={})).json()["code"]
        other = (await api.post("/_sim/orders", json={})).json()["code"]
        await api.patch(f"/_sim/orders/{created}", json={"statusId": -3})
        await api.patch(f"/_sim/orders/{created}", json={"email": "changed@customer.example"})
        await api.delete(f"/_sim/orders/{other}")

        changes = (await api.get("/api/orders/changes", params={"from": started})).json()["data"]["changes"]
        assert [(c["code"], c["changeType"]) for c in changes] == [(created, "edit"), (other, "delete")]
        deleted = (await api.get("/api/orders/changes", params={"from": started, "changeType": "delete"})).json()
        assert [c["code"] for c in deleted["data"]["changes"]] == [other]
        everything = (await api.get("/api/orders/changes", params={"from": SINCE, "itemsPerPage": 1000})).json()
        codes = [c["code"] for c in everything["data"]["changes"]]
        assert len(codes) == len(set(codes)) == 32
        assert (await api.get(f"/api/orders/{other}")).status_code == 404
        detail = (await api.get(f"/api/orders/{created}")).json()["data"]["order"]
        assert detail["status"]["id"] == -3 and detail["email"] == "changed@customer.example"


async def test_offset_with_unencoded_plus_is_understood(api: httpx.AsyncClient) -> None:
    """``from=...+02:00`` sent without encoding arrives with a space; Shoptet reads it as ``+``."""
    response = await api.get("/api/orders/changes?from=2000-01-01T00:00:00+02:00")
    assert response.status_code == 200
    assert response.json()["data"]["paginator"]["totalCount"] >= 120


async def test_seed_is_deterministic() -> None:
    from simulator.config import SimulatorConfig
    from simulator.state import SimState

    epoch = datetime(2026, 1, 31, tzinfo=UTC)
    one, two = (SimState(SimulatorConfig(orders=20, products=15, eshops=2, seed=11, epoch=epoch)) for _ in range(2))
    assert [e.premium_token for e in one.eshops] == [e.premium_token for e in two.eshops]
    assert one.eshops[1].orders == two.eshops[1].orders
    assert one.eshops[1].products == two.eshops[1].products
    other = SimState(SimulatorConfig(orders=20, products=15, eshops=2, seed=12, epoch=epoch))
    assert other.eshops[0].premium_token != one.eshops[0].premium_token
    sets = [p for p in one.eshops[0].products.values() if p["type"] == "product-set"]
    assert sets and all(p["setItems"] for p in sets)


async def test_product_changes_from_admin(make_sim: Any) -> None:
    sim = await make_sim(products=5)
    started = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        guid = next(iter(sim.state.eshops[0].products))
        changed = await api.patch(f"/_sim/products/{guid}", json={"name": "Renamed"})
        assert changed.json()["product"]["name"] == "Renamed"
        created = (await api.post("/_sim/products", json={})).json()["guid"]
        changes = (await api.get("/api/products/changes", params={"from": started})).json()["data"]["changes"]
        assert [(c["guid"], c["changeType"]) for c in changes] == [(guid, "edit"), (created, "edit")]
        assert (await api.get(f"/api/products/{created}")).status_code == 200
        listed = (await api.get("/api/products")).json()["data"]["paginator"]["totalCount"]
        assert listed == 6
