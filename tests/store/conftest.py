"""Store fixtures: every store test runs once on SQLite and once on PostgreSQL.

PostgreSQL comes from ``TEST_DATABASE_URL`` (default: the local server with trust auth); each test
run gets its own schema, dropped at the end, and tables are emptied between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support import service_missing
from worker.store import schema
from worker.store.crypto import SecretBox
from worker.store.sql import SqlInstallStore, async_database_url

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def secret_box() -> SecretBox:
    return SecretBox(SecretBox.generate_key())


async def _drop_schema(name: str) -> None:
    engine = create_async_engine(async_database_url(PG_URL))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A schema of this test run's own; dropped at the end (if PostgreSQL was used at all)."""
    name = f"test_store_{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(OSError, SQLAlchemyError):
        asyncio.run(_drop_schema(name))


async def _postgresql_answers() -> None:
    """Skip (or fail, under ``REQUIRE_SERVICES``) when PostgreSQL does not take a connection; a
    store that then fails to open (a migration's bug) fails its tests instead of skipping them."""
    # the URL as asyncpg takes it: the store also takes postgresql+asyncpg:// and the like
    probe = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(probe, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        service_missing(f"no PostgreSQL at {PG_URL}: {exc}")
    await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path, secret_box: SecretBox, pg_schema: str
) -> AsyncIterator[Callable[[], Awaitable[SqlInstallStore]]]:
    """Open stores on the same database (like several worker processes would); empty at start."""
    opened: list[SqlInstallStore] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
        schema_name = None
    else:
        url = PG_URL
        schema_name = pg_schema

    async def factory() -> SqlInstallStore:
        store = await SqlInstallStore.open(url, secret_box, schema=schema_name)
        opened.append(store)
        return store

    if request.param == "postgresql":
        await _postgresql_answers()
    first = await factory()
    async with first._engine.begin() as conn:
        for table in reversed(schema.metadata.sorted_tables):
            await conn.execute(table.delete())
    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def store(store_factory: Callable[[], Awaitable[SqlInstallStore]]) -> SqlInstallStore:
    return await store_factory()
