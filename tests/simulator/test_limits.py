"""Shoptet's limits: 3 connections per token, 50 per IP, the leaky bucket, and 423 for concurrent writes to one URL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tests.simulator.helpers import premium_headers
from tests.simulator.openapi_conformance import assert_response_conforms


async def burst(
    client: httpx.AsyncClient, requests: Sequence[tuple[str, str, dict[str, str], bytes | None]]
) -> list[httpx.Response]:
    return list(
        await asyncio.gather(*(client.request(m, url, headers=h, content=body) for m, url, h, body in requests))
    )


async def test_fourth_concurrent_request_on_a_token_gets_429(make_sim: Any) -> None:
    sim = await make_sim(eshops=2, latency_ms=400)
    one, two = (premium_headers(sim.premium_token(i)) for i in range(2))
    async with httpx.AsyncClient(base_url=sim.url) as client:
        responses = await burst(client, [("GET", "/api/stocks", one, None)] * 4)
        assert sorted(r.status_code for r in responses) == [200, 200, 200, 429]
        refused = next(r for r in responses if r.status_code == 429)
        assert_response_conforms("GET", "/api/stocks", 429, refused.json())
        # only a full leaky bucket says when to come back ("only if bucket is fulfilled")
        assert "Retry-After" not in refused.headers
        assert all(r.headers["X-RateLimit-Bucket-Filling"].endswith("/200") for r in responses)  # on every answer

        responses = await burst(
            client, [("GET", "/api/stocks", one, None)] * 3 + [("GET", "/api/stocks", two, None)] * 3
        )
        assert [r.status_code for r in responses] == [200] * 6

    stats = sim.state.stats.snapshot()
    assert stats["served429"] == 1
    assert stats["rateLimitedByReason"] == {"token": 1}
    assert stats["maxConcurrencyPerToken"] == {sim.premium_token(0): 3, sim.premium_token(1): 3}
    # the refused 4th arrived while 3 ran: what a client attempted, not what it was served
    assert stats["peakRequestsPerToken"] == {sim.premium_token(0): 4, sim.premium_token(1): 3}


async def test_per_ip_limit(make_sim: Any) -> None:
    sim = await make_sim(eshops=5, latency_ms=400, per_ip_limit=4)
    async with httpx.AsyncClient(base_url=sim.url) as client:
        responses = await burst(
            client, [("GET", "/api/stocks", premium_headers(sim.premium_token(i)), None) for i in range(5)]
        )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 429]
    assert sim.state.stats.rate_limited["ip"] == 1


async def test_leaky_bucket_fills_reports_and_refuses(make_sim: Any) -> None:
    sim = await make_sim(bucket_size=5, bucket_drain_per_second=0.5)
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as client:
        fillings = []
        for _ in range(5):
            response = await client.get("/api/stocks")
            assert response.status_code == 200
            fillings.append(response.headers["X-RateLimit-Bucket-Filling"])
        assert fillings[0] == "1/5" and fillings[-1] == "5/5"
        refused = await client.get("/api/stocks")
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Bucket-Filling"] == "5/5"
    retry_at = parsedate_to_datetime(refused.headers["Retry-After"])
    assert retry_at.tzinfo is not None
    assert sim.state.stats.rate_limited["bucket"] == 1


async def test_default_bucket_is_shoptets(sim: Any, api: httpx.AsyncClient) -> None:
    response = await api.get("/api/eshop")
    current, maximum = response.headers["X-RateLimit-Bucket-Filling"].split("/")
    assert maximum == "200" and 1 <= int(current) <= 200
    assert sim.state.config.bucket_drain_per_second == 10
    assert (sim.state.config.per_token_limit, sim.state.config.per_ip_limit) == (3, 50)


async def test_concurrent_writes_to_one_url_get_423(make_sim: Any) -> None:
    """ "The lock is only valid for a specific called URL": keyed on the body as well, two
    different writes to one order both went through, where Shoptet answers the second 423."""
    sim = await make_sim(latency_ms=300)
    headers = premium_headers(sim.premium_token())
    code = next(iter(sim.state.eshops[0].orders))
    url = f"/api/orders/{code}/status"
    same = json.dumps({"data": {"statusId": -2}}).encode()
    other = json.dumps({"data": {"statusId": -3}}).encode()
    async with httpx.AsyncClient(base_url=sim.url) as client:
        responses = await burst(client, [("PATCH", url, headers, same), ("PATCH", url, headers, same)])
        assert sorted(r.status_code for r in responses) == [200, 423]
        locked = next(r for r in responses if r.status_code == 423)
        assert_response_conforms("PATCH", "/api/orders/{code}/status", 423, locked.json())

        again = await client.patch(url, headers=headers, content=same)  # the lock ends with the request
        assert again.status_code == 200
        different = await burst(client, [("PATCH", url, headers, same), ("PATCH", url, headers, other)])
        assert sorted(r.status_code for r in different) == [200, 423]
        notes = await burst(
            client, [("PATCH", url, headers, same), ("PATCH", f"/api/orders/{code}/notes", headers, b"")]
        )
        assert 423 not in [r.status_code for r in notes]  # another URL: not locked
    assert sim.state.stats.snapshot()["served423"] == 2


async def test_write_lock_expires_after_lock_seconds() -> None:
    from simulator.limits import WriteLocks

    locks = WriteLocks()
    assert locks.acquire("k", now=100.0, ttl=5.0)
    assert not locks.acquire("k", now=104.9, ttl=5.0)
    assert locks.acquire("k", now=105.1, ttl=5.0)  # a stuck request holds it at most 5 s
