"""Fixtures for node tests: a respx-mocked Shoptet checked against openapi.yaml, a frozen clock,
both applications, and a harness (store, client, limiter) per test.

Every request a node sends to the Shoptet API base is validated against openapi.yaml when the test
ends (fixture ``shoptet_api``), so no test passes with a request the real API would refuse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import httpx
import pytest
import respx
from nodes_fakes import ADDON, API, NOW, PREMIUM, Harness, MemoryStore
from nodes_openapi_check import OpenApiSpec

from nodes import shoptet
from worker.limiter import LocalLimiter
from worker.settings import Settings
from worker.store import Install


@pytest.fixture(scope="session")
def openapi() -> OpenApiSpec:
    return OpenApiSpec()


@pytest.fixture
def shoptet_api(openapi: OpenApiSpec) -> Iterator[respx.MockRouter]:
    """Shoptet under respx; at teardown every request sent to the API is validated against the spec."""
    with respx.mock(base_url=API, assert_all_called=False, assert_all_mocked=True) as router:
        yield router
        problems = [
            p for call in router.calls if str(call.request.url).startswith(API) for p in openapi.problems(call.request)
        ]
    assert not problems, "requests the Shoptet API would refuse:\n" + "\n".join(problems)


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    monkeypatch.setattr(shoptet, "utcnow", lambda: NOW)
    return NOW


@pytest.fixture(params=[PREMIUM, ADDON])
def application(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def harness(shoptet_api: respx.MockRouter, frozen_now: datetime, application: str) -> AsyncIterator[Harness]:
    store = MemoryStore()
    install = Install(
        user=f"eshop-1-{application}",
        application=application,
        eshop_id="222651",
        secrets={"token": "private-token"} if application == PREMIUM else {},
    )
    await store.add_install(install)
    async with httpx.AsyncClient() as http:
        yield Harness(
            store=store,
            http=http,
            limiter=LocalLimiter(),
            settings=Settings(public_base_url="https://worker.example.com"),
            install=await store.get_install(install.user, application) or install,
        )
