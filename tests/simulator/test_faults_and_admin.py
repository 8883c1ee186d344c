"""Latency and fault injection, runtime config, stats, and the server's sync interface."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from tests.simulator.helpers import premium_headers
from tests.simulator.openapi_conformance import assert_response_conforms


@pytest.mark.parametrize(
    ("kind", "status", "error_code"),
    [
        ("500", 500, "internal-error"),
        ("503", 503, "maintenance"),
        ("429", 429, "too-many-requests"),
        ("423", 423, "locked"),
    ],
)
async def test_injected_error_faults(make_sim: Any, kind: str, status: int, error_code: str) -> None:
    sim = await make_sim(fault_rate=1.0, fault_kinds=[kind])
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        response = await api.get("/api/orders")
        assert response.status_code == status
        assert response.json()["errors"][0]["errorCode"] == error_code
        assert_response_conforms("GET", "/api/orders", status, response.json())
        if status == 429:
            assert "Retry-After" in response.headers
        assert (await api.get("/_sim/stats")).json()["faults"] == {kind: 1}


async def test_dropped_connection(make_sim: Any) -> None:
    sim = await make_sim(fault_rate=1.0, fault_kinds=["drop"])
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        with pytest.raises(httpx.RemoteProtocolError):
            await api.get("/api/orders")
        await api.put("/_sim/config", json={"fault_rate": 0})
        assert (await api.get("/api/orders")).status_code == 200  # the server lives on
    assert sim.state.stats.requests[("GET /api/orders", 0)] == 1


async def test_slow_fault_and_latency_delay_answers(make_sim: Any) -> None:
    sim = await make_sim(fault_rate=1.0, fault_kinds=["slow"], slow_response_ms=300)
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        started = time.monotonic()
        assert (await api.get("/api/stocks")).status_code == 200
        assert time.monotonic() - started >= 0.3
        await api.put("/_sim/config", json={"fault_rate": 0, "latency_ms": 200})
        started = time.monotonic()
        assert (await api.get("/api/stocks")).status_code == 200
        assert time.monotonic() - started >= 0.2


async def test_faults_repeat_with_the_seed(make_sim: Any) -> None:
    sequences = []
    for _ in range(2):
        sim = await make_sim(seed=42, fault_rate=0.4, fault_kinds=["500", "503"])
        async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
            sequences.append([(await api.get("/api/stocks")).status_code for _ in range(25)])
    assert sequences[0] == sequences[1]
    assert {200, 500, 503} <= set(sequences[0])


async def test_admin_calls_are_not_counted(make_sim: Any) -> None:
    sim = await make_sim(bucket_size=3)
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token())) as api:
        for _ in range(5):
            assert (await api.post("/_sim/orders", json={})).status_code == 201
        await api.get("/_sim/eshops")
        stats = (await api.get("/_sim/stats")).json()
        assert stats["requests"]["total"] == 0
        assert (await api.get("/api/stocks")).headers["X-RateLimit-Bucket-Filling"] == "1/3"
        stats = (await api.get("/_sim/stats")).json()
        assert stats["requests"]["byEndpoint"] == {"GET /api/stocks": {"200": 1}}
        assert stats["wrongContentType"] == 0
        await api.get("/api/stocks", headers={"Content-Type": "application/json"})
        reset = (await api.post("/_sim/stats/reset")).json()
        assert reset["requests"]["total"] == 0
        assert sim.state.stats.wrong_content_type == 0


async def test_admin_lists_eshops_with_their_tokens(sim: SimulatorServer, api: httpx.AsyncClient) -> None:
    from simulator.seed import premium_token

    eshops = (await api.get("/_sim/eshops")).json()
    assert [e["premiumToken"] for e in eshops] == [premium_token(7, e["eshopId"]) for e in eshops]
    assert sim.premium_tokens() == {e["eshopId"]: e["premiumToken"] for e in eshops}


def test_sync_start_stop() -> None:
    server = SimulatorServer(SimulatorConfig(orders=3, products=3)).start()
    try:
        response = httpx.get(f"{server.url}/api/orders", headers=premium_headers(server.premium_token()))
        assert response.status_code == 200
        assert response.json()["data"]["paginator"]["totalCount"] == 3
        assert server.state.config.public_url == server.url
    finally:
        server.stop()
