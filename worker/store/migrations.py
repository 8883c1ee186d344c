"""A tiny versioned migration runner: the project creates and upgrades its own schema at open.

``MIGRATIONS`` is an ordered list; ``schema_version`` records which ones ran. Each migration runs in
the same transaction as its version row, so a crash leaves either both or neither. On PostgreSQL an
advisory lock makes concurrent starts of several workers wait for one another; on SQLite the
database file lock does the same for the transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from sqlalchemy import Column, Connection, Float, Integer, MetaData, Table, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from worker.store.schema import build_v1

log = structlog.get_logger(__name__)

#: An arbitrary constant that names "the shoptet-worker migration" for pg_advisory_xact_lock.
_PG_LOCK_ID = 7_406_221_913

#: Execution option read by the SQLite engine's "begin" hook (see worker.store.sql).
SQLITE_BEGIN_OPTION = "sqlite_begin"

_version_metadata = MetaData()
schema_version = Table(
    "schema_version",
    _version_metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

Migration = Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    metadata = MetaData()
    build_v1(metadata)
    metadata.create_all(conn)


def _v2_trash_ids_never_reused(conn: Connection) -> None:
    """SQLite handed a deleted trash entry's id to the next one (an INTEGER PRIMARY KEY without
    AUTOINCREMENT takes max(id) + 1), so an operator's ``replay 42`` or ``discard 42``, typed after
    ``show 42``, could act on another message. SQLite cannot alter a key: the table is rebuilt with
    its rows. PostgreSQL's sequence never reuses ids."""
    if conn.dialect.name != "sqlite":
        return
    conn.execute(text("ALTER TABLE trash RENAME TO trash_v1"))
    metadata = MetaData()
    trash = build_v1(metadata)["trash"]
    trash.dialect_kwargs["sqlite_autoincrement"] = True
    trash.create(conn)
    columns = ", ".join(f'"{c.name}"' for c in trash.columns)
    conn.execute(text(f"INSERT INTO trash ({columns}) SELECT {columns} FROM trash_v1"))
    conn.execute(text("DROP TABLE trash_v1"))


#: Append only; never edit a migration that has shipped.
MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "installs, settings, webhooks, token cache, leases, trash", _v1_initial),
    (2, "trash ids are never reused (SQLite)", _v2_trash_ids_never_reused),
]


def _apply_pending(conn: Connection) -> list[int]:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    _version_metadata.create_all(conn)
    done = set(conn.execute(select(schema_version.c.version)).scalars())
    applied = []
    for version, _description, migrate in MIGRATIONS:
        if version in done:
            continue
        migrate(conn)
        conn.execute(schema_version.insert().values(version=version, applied_at=time.time()))
        applied.append(version)
    return applied


async def migrate(engine: AsyncEngine) -> list[int]:
    """Run the migrations this database has not seen yet; return their versions."""
    async with engine.connect() as conn:
        # SQLite: take the write lock up front so that two processes opening a fresh file at the
        # same time queue instead of both reading "version 0" and then failing to upgrade.
        conn = await conn.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        async with conn.begin():
            applied = await conn.run_sync(_apply_pending)
    if applied:
        log.info("install store migrated", versions=applied)
    return applied


def latest_version() -> int:
    return MIGRATIONS[-1][0]
