"""Per-token concurrency limiter: at most 3 Shoptet requests per token, 50 per host, plus pacing.

Shoptet answers 429 past 3 concurrent connections per token or 50 per IP, and meters every token
with a leaky bucket (200 drops, draining 10/s) that it reports on each response as
``X-RateLimit-Bucket-Filling: cur/max``. Collecting 429s costs retries and hops, so the limiter
both caps concurrency and slows a token down *before* its bucket is full.

This module holds the contract, the pacing arithmetic shared by every implementation, and the
in-process implementation; the Redis-backed one shared by every worker process lives in
:mod:`worker.redis_limiter`. Each key has its own semaphore and its own pacing state, so waiting
for one token never delays another token's requests. The token slot is taken before the host slot,
so a request never sits on one of the 50 host slots while it waits for its token.

Metrics: both implementations accept ``on_wait(key, seconds)``, called once per ``slot()`` with
the total time spent before the request could start (token slot + pacing + host slot; ``0.0``
when nothing waited). ``Metrics.limiter_waited`` has exactly that signature.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

BUCKET_HEADER = "X-RateLimit-Bucket-Filling"

#: Called once per slot with the limiter key and the seconds waited before the request started.
OnWait = Callable[[str, float], None]


class Limiter(Protocol):
    def slot(self, key: str) -> AbstractAsyncContextManager[None]:
        """Hold one of the token's connection slots (and one of the host's) for one request."""

    def observe(self, key: str, headers: Mapping[str, str]) -> None:
        """Learn from a response's headers (``X-RateLimit-Bucket-Filling``) to pace the token."""


# --- pacing -------------------------------------------------------------------------------------


def parse_bucket_filling(headers: Mapping[str, str]) -> tuple[float, float] | None:
    """``(current, capacity)`` from ``X-RateLimit-Bucket-Filling: 37/200``; ``None`` if absent or junk.

    httpx headers are case-insensitive, plain dicts (tests, other clients) are not: try both.
    """
    value = headers.get(BUCKET_HEADER)
    if value is None:
        lowered = BUCKET_HEADER.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    if value is None:
        return None
    current, sep, capacity = value.partition("/")
    if not sep:
        return None
    try:
        cur, cap = float(current.strip()), float(capacity.strip())
    except ValueError:
        return None
    if cur != cur or cap != cap or cur < 0 or cap <= 0:  # NaN or nonsense
        return None
    return cur, cap


def pacing_delay(current: float, capacity: float, *, threshold: float = 0.7, drain_per_second: float = 10.0) -> float:
    """Seconds the token's next request should wait so it lands with the bucket at the threshold.

    The next request adds one drop; the bucket drains ``drain_per_second``. Below the threshold
    (``threshold * capacity``) nothing waits; above it we wait until ``current + 1`` has drained
    down to the threshold. Never more than a full bucket's drain time, whatever the header says.
    Examples with the defaults: ``190/200`` -> 5.1 s, ``140/200`` -> 0.1 s, ``10/200`` -> 0.
    """
    if capacity <= 0 or drain_per_second <= 0:
        return 0.0
    excess = current + 1 - threshold * capacity
    if excess <= 0:
        return 0.0
    return min(excess, capacity) / drain_per_second


@dataclass(frozen=True)
class Pacing:
    """When to start slowing a token down: above ``threshold`` of its bucket, draining at ``drain_per_second``."""

    threshold: float = 0.7
    drain_per_second: float = 10.0

    def delay(self, headers: Mapping[str, str]) -> float:
        """How long the token's next request should wait after a response with these headers."""
        filling = parse_bucket_filling(headers)
        if filling is None:
            return 0.0
        return pacing_delay(*filling, threshold=self.threshold, drain_per_second=self.drain_per_second)


# --- in-process implementation ------------------------------------------------------------------


class _Token:
    """One key's semaphore and "not before" time; ``users`` lets idle keys be forgotten."""

    __slots__ = ("not_before", "semaphore", "users")

    def __init__(self, per_token: int) -> None:
        self.semaphore = asyncio.Semaphore(per_token)
        self.not_before = 0.0
        self.users = 0


class LocalLimiter:
    """Semaphores and pacing in this process: right for one worker process, not for several.

    ``clock`` and ``sleep`` are injectable so pacing can be tested without wall-clock waits.
    """

    def __init__(
        self,
        per_token: int = 3,
        per_host: int = 50,
        *,
        pacing: Pacing | None = None,
        on_wait: OnWait | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._per_token = per_token
        self._host = asyncio.Semaphore(per_host)
        self._tokens: dict[str, _Token] = {}
        self._pacing = pacing or Pacing()
        self._on_wait = on_wait
        self._clock = clock
        self._sleep = sleep

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        token = self._tokens.get(key)
        if token is None:
            token = self._tokens[key] = _Token(self._per_token)
        token.users += 1
        try:
            started = self._clock()
            async with token.semaphore:
                # Pacing while holding the token slot is free: the token may not send anyway.
                # Re-check after each sleep: responses that arrived meanwhile may push it further.
                while (remaining := token.not_before - self._clock()) > 0:
                    await self._sleep(remaining)
                async with self._host:
                    if self._on_wait is not None:
                        self._on_wait(key, max(0.0, self._clock() - started))
                    yield
        finally:
            token.users -= 1
            if token.users == 0 and token.not_before <= self._clock():
                self._tokens.pop(key, None)

    def observe(self, key: str, headers: Mapping[str, str]) -> None:
        delay = self._pacing.delay(headers)
        if delay <= 0:
            return
        now = self._clock()
        token = self._tokens.get(key)
        if token is None:
            if len(self._tokens) >= self._SWEEP_AT:
                self._sweep(now)
            token = self._tokens[key] = _Token(self._per_token)
        token.not_before = max(token.not_before, now + delay)

    _SWEEP_AT = 4096

    def _sweep(self, now: float) -> None:
        """Forget idle keys whose pacing has passed, so a long-lived process does not grow forever."""
        for key in [k for k, t in self._tokens.items() if t.users == 0 and t.not_before <= now]:
            del self._tokens[key]
