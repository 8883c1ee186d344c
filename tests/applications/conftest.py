"""Fixtures for the applications: a real SQLite store and an HTTP client mocked with respx.

``oauth`` and ``api`` are respx routers wired into the client as its transport, so tests that
serve an ASGI app through httpx at the same time are not affected by the mocking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import respx

from worker.store.crypto import SecretBox
from worker.store.sql import SqlInstallStore

OAUTH = "https://oauth.test"
API = "https://api.test"


@pytest.fixture
def secret_box() -> SecretBox:
    return SecretBox(SecretBox.generate_key())


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


@pytest.fixture
async def store(db_url: str, secret_box: SecretBox) -> AsyncIterator[SqlInstallStore]:
    store = await SqlInstallStore.open(db_url, secret_box)
    yield store
    await store.close()


@pytest.fixture
def shoptet() -> respx.Router:
    return respx.Router(assert_all_called=False)


@pytest.fixture
async def http(shoptet: respx.Router) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(shoptet.async_handler)) as client:
        yield client
