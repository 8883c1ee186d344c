"""Table definitions of the install store, written once for SQLite and PostgreSQL.

Settings live one row per key (``install_settings``) rather than in a JSON document on the install:
an upsert of one row is atomic on both engines, so a watermark written by one worker can never be
lost to another worker writing a different setting. Times are epoch seconds (floats) because
comparing them in SQL (lease expiry) then behaves the same on both engines.

``build_v1`` is frozen: migration 1 creates exactly these tables. A later schema change adds a
migration in :mod:`worker.store.migrations` and updates the runtime tables below to match it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER keys


def build_v1(metadata: MetaData) -> dict[str, Table]:
    installs = Table(
        "installs",
        metadata,
        Column("user", String(255), nullable=False),
        Column("application", String(64), nullable=False),
        Column("enabled", Boolean, nullable=False, default=True),
        Column("eshop_id", String(64), nullable=True, index=True),
        Column("created_at", Float, nullable=False),
        PrimaryKeyConstraint("user", "application"),
    )
    install_settings = Table(
        "install_settings",
        metadata,
        Column("user", String(255), nullable=False),
        Column("application", String(64), nullable=False),
        Column("key", String(255), nullable=False),
        # encrypted: Fernet ciphertext of the string; otherwise the JSON of the value
        Column("encrypted", Boolean, nullable=False),
        Column("value", Text, nullable=False),
        PrimaryKeyConstraint("user", "application", "encrypted", "key"),
    )
    webhooks = Table(
        "webhooks",
        metadata,
        Column("user", String(255), nullable=False),
        Column("application", String(64), nullable=False),
        Column("webhook_id", BigInteger, nullable=False),
        Column("event", String(128), nullable=False),
        Column("url", Text, nullable=False),
        Column("topology", String(255), nullable=True),
        PrimaryKeyConstraint("user", "application", "webhook_id"),
    )
    token_cache = Table(
        "token_cache",
        metadata,
        Column("key", String(512), primary_key=True),
        Column("token", Text, nullable=False),  # encrypted
        Column("expires_at", Float, nullable=False),
    )
    leases = Table(
        "leases",
        metadata,
        Column("name", String(512), primary_key=True),
        Column("owner", String(255), nullable=False),
        Column("expires_at", Float, nullable=False),
    )
    trash = Table(
        "trash",
        metadata,
        Column("id", ID, primary_key=True, autoincrement=True),
        Column("topic", String(255), nullable=False),
        Column("partition", Integer, nullable=True),
        Column("offset", BigInteger, nullable=True),
        Column("node_id", String(255), nullable=True),
        Column("node_name", String(255), nullable=True),
        Column("topology_name", String(255), nullable=True),
        Column("topology_version", String(64), nullable=True),
        Column("user", String(255), nullable=True),
        Column("correlation_id", String(255), nullable=True),
        Column("process_id", String(255), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("error_class", String(255), nullable=False),
        Column("error_message", Text, nullable=False),
        Column("http_status", Integer, nullable=True),
        Column("error_body", Text, nullable=True),  # JSON
        Column("headers", Text, nullable=False),  # JSON
        Column("key", String(512), nullable=True),
        Column("body", Text, nullable=True),  # JSON
        Column("raw_body", Text, nullable=True),
        Column("created_at", Float, nullable=False),
    )
    return {
        "installs": installs,
        "install_settings": install_settings,
        "webhooks": webhooks,
        "token_cache": token_cache,
        "leases": leases,
        "trash": trash,
    }


#: The runtime tables: the schema after the last migration.
metadata = MetaData()
_tables = build_v1(metadata)
installs = _tables["installs"]
install_settings = _tables["install_settings"]
webhooks = _tables["webhooks"]
token_cache = _tables["token_cache"]
leases = _tables["leases"]
trash = _tables["trash"]
