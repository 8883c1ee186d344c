"""Limiter fixtures: a real Redis (``TEST_REDIS_URL``), a fresh key prefix per test, and a kit that
builds either implementation so the behavioural tests run against both."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.support import REDIS_URL, service_missing
from worker.limiter import Limiter, LocalLimiter
from worker.redis_limiter import RedisLimiter


@pytest.fixture
def prefix() -> str:
    return f"test-limiter:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_url(prefix: str) -> Iterator[str]:
    """``TEST_REDIS_URL`` if Redis answers (else skip, or fail under ``REQUIRE_SERVICES``); the
    test's keys are deleted afterwards."""
    client = sync_redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except RedisError as exc:
        client.close()
        service_missing(f"no Redis at {REDIS_URL}: {exc}")
    yield REDIS_URL
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


class LimiterKit:
    """Builds limiters of one kind. ``pair()`` gives two "processes": two Redis limiters sharing the
    prefix, or the same LocalLimiter twice (it can only ever be shared within one process)."""

    def __init__(self, kind: str, prefix: str) -> None:
        self.kind = kind
        self.prefix = prefix
        self._redis_limiters: list[RedisLimiter] = []

    def new(self, **options: Any) -> Limiter:
        if self.kind == "local":
            return LocalLimiter(**options)
        limiter = RedisLimiter.from_url(REDIS_URL, prefix=self.prefix, **options)
        self._redis_limiters.append(limiter)
        return limiter

    def pair(self, **options: Any) -> tuple[Limiter, Limiter]:
        first = self.new(**options)
        return first, first if self.kind == "local" else self.new(**options)

    async def close(self) -> None:
        for limiter in self._redis_limiters:
            await limiter.close()


@pytest.fixture(params=["local", "redis"])
async def kit(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[LimiterKit]:
    if request.param == "redis":
        request.getfixturevalue("redis_url")  # skips without Redis; cleans the prefix afterwards
    built = LimiterKit(request.param, prefix)
    yield built
    await built.close()
