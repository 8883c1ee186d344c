"""Fixtures: a shared seeded simulator, fresh ones for limit tests, and a webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from tests.simulator.helpers import Receiver, premium_headers


@pytest.fixture(scope="session")
async def sim() -> AsyncIterator[SimulatorServer]:
    """Shared by read-mostly tests; tests that change limits or config start their own (``make_sim``)."""
    config = SimulatorConfig(
        eshops=2, orders=120, products=40, seed=7, job_delay_seconds=0.05, webhook_retry_backoff_seconds=0.05
    )
    async with SimulatorServer(config) as server:
        yield server


@pytest.fixture
async def api(sim: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, headers=premium_headers(sim.premium_token(0))) as client:
        yield client


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Awaitable[SimulatorServer]]]:
    started: list[SimulatorServer] = []

    async def start(**overrides: Any) -> SimulatorServer:
        defaults: dict[str, Any] = {
            "orders": 30,
            "products": 12,
            "seed": 3,
            "job_delay_seconds": 0.05,
            "webhook_retry_backoff_seconds": 0.05,
        }
        server = SimulatorServer(SimulatorConfig(**{**defaults, **overrides}))
        await server.__aenter__()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.__aexit__(None, None, None)


@pytest.fixture
def receiver() -> Any:
    hook = Receiver()
    hook.server.start()
    yield hook
    hook.server.stop()
