"""Per-token concurrency limiter: at most 3 Shoptet requests per token, 50 per host.

This module holds the contract and the in-process implementation; the Redis-backed one shared by
every worker process lives in :mod:`worker.redis_limiter`. Each key has its own semaphore, so
waiting for one token's slot never delays another token's requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol


class Limiter(Protocol):
    def slot(self, key: str) -> AbstractAsyncContextManager[None]:
        """Hold one of the token's connection slots (and one of the host's) for one request."""

    def observe(self, key: str, headers: Mapping[str, str]) -> None:
        """Learn from a response's headers (``X-RateLimit-Bucket-Filling``) to pace the token."""


class LocalLimiter:
    """Semaphores in this process: right for one worker process, not for several."""

    def __init__(self, per_token: int = 3, per_host: int = 50) -> None:
        self._per_token = per_token
        self._host = asyncio.Semaphore(per_host)
        self._tokens: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        token = self._tokens.setdefault(key, asyncio.Semaphore(self._per_token))
        async with token, self._host:
            yield

    def observe(self, key: str, headers: Mapping[str, str]) -> None:
        return None
