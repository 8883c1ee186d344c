"""Snapshot jobs: the gzipped JSON Lines result holds the same entities as the detail endpoints."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import httpx

from tests.simulator.helpers import Receiver, premium_headers


async def run_snapshot(api: httpx.AsyncClient, receiver: Receiver, url: str) -> tuple[dict[str, Any], list[Any]]:
    job_id = (await api.get(url)).json()["data"]["jobId"]
    (call,) = await asyncio.to_thread(receiver.wait_for, 1)
    finished = json.loads(call.body)
    assert (finished["event"], finished["eventInstance"]) == ("job:finished", job_id)
    job = (await api.get(f"/api/system/jobs/{job_id}")).json()["data"]["job"]
    assert job["status"] == "completed" and job["resultUrl"].startswith("http://")
    async with httpx.AsyncClient() as anonymous:  # the result URL needs no token, like Shoptet's
        result = await anonymous.get(job["resultUrl"])
    assert result.status_code == 200
    lines = gzip.decompress(result.content).decode().splitlines()
    return job, [json.loads(line) for line in lines]


async def test_order_snapshot_matches_detail_endpoint(make_sim: Any, receiver: Receiver) -> None:
    sim = await make_sim(orders=25)
    include = "shippingDetails,notes,surchargeParameters"
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        await api.post("/api/webhooks", content=json.dumps({"data": [{"event": "job:finished", "url": receiver.url}]}))
        job, lines = await run_snapshot(api, receiver, f"/api/orders/snapshot?include={include}")
        assert job["endpoint"] == "/api/orders/snapshot"
        assert len(lines) == 25
        for line in lines:
            detail = (await api.get(f"/api/orders/{line['code']}", params={"include": include})).json()
            assert line == detail["data"]["order"]


async def test_product_snapshot_matches_detail_endpoint(make_sim: Any, receiver: Receiver) -> None:
    sim = await make_sim(products=22)
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        await api.post("/api/webhooks", content=json.dumps({"data": [{"event": "job:finished", "url": receiver.url}]}))
        _, lines = await run_snapshot(api, receiver, "/api/products/snapshot?include=setItems")
        assert len(lines) == 22 and any(line["setItems"] for line in lines)
        for line in lines:
            detail = (await api.get(f"/api/products/{line['guid']}", params={"include": "setItems"})).json()
            assert line == detail["data"]


async def test_snapshot_respects_creation_time_filter(make_sim: Any, receiver: Receiver) -> None:
    sim = await make_sim(orders=10)
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        await api.post("/api/webhooks", content=json.dumps({"data": [{"event": "job:finished", "url": receiver.url}]}))
        orders = (await api.get("/api/orders")).json()["data"]["orders"]
        pivot = orders[6]["creationTime"]
        _, lines = await run_snapshot(
            api, receiver, f"/api/orders/snapshot?creationTimeFrom={pivot.replace('+', '%2B')}"
        )
    assert [line["code"] for line in lines] == [o["code"] for o in orders[6:]]
