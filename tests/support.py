"""Helpers shared by test packages (conftest files cannot be imported from each other)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from worker.settings import Settings

#: Redis for the tests (the shared limiter); ``.ci/run`` starts it.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def service_missing(reason: str) -> NoReturn:
    """Skip a test whose service (Redis) does not answer, or fail it when ``REQUIRE_SERVICES`` is
    set: ``.ci/run`` sets it, so that CI cannot pass with the shared limiter untested."""
    if os.environ.get("REQUIRE_SERVICES"):
        pytest.fail(f"{reason} (REQUIRE_SERVICES is set)")
    pytest.skip(reason)


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


Send = Callable[[str, Any], Awaitable["asyncio.Future[Any]"]]


def acknowledged_late(send: Send, delay: float) -> Send:
    """``send`` (a Runtime's) whose acknowledgements come ``delay`` seconds after the broker's
    own: a slow broker, for what waits on them."""

    async def slow(topic: str, message: Any) -> asyncio.Future[Any]:
        acknowledged = await send(topic, message)
        late: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        acknowledged.add_done_callback(lambda _: asyncio.get_running_loop().call_later(delay, late.set_result, None))
        return late

    return slow
