"""Helpers shared by test packages (conftest files cannot be imported from each other)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from worker.settings import Settings


def settings_for_test(bootstrap: str, tmp: Path, *, prefix: str | None = None, **overrides: Any) -> Settings:
    """A test worker's settings: its own topics and SQLite store, 3 partitions, quick group joins."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_topic_prefix": prefix or f"t{uuid.uuid4().hex[:10]}",
        "kafka_partitions": 3,
        "kafka_session_timeout_ms": 6000,
        "database_url": f"sqlite:///{tmp / 'store.sqlite3'}",
        "secret_key_file": tmp / "secret.key",
    }
    values.update(overrides)
    return Settings(**values)
