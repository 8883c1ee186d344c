"""Shoptet's limits as data structures: the leaky bucket and the write locks (the 423s).

Concurrency limits are plain counters in ``Stats``; these two need time, so they take ``now`` as an
argument (monotonic seconds) and stay testable without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BucketResult:
    accepted: bool
    level: int
    retry_after: float  # seconds until one drop has drained (only meaningful when refused)


class LeakyBuckets:
    """One bucket per token: each request adds a drop, drops drain at a constant rate."""

    def __init__(self) -> None:
        self._levels: dict[str, tuple[float, float]] = {}  # token -> (level, at)

    def add(self, token: str, now: float, size: int, drain_per_second: float, *, dry_run: bool = False) -> BucketResult:
        """Add one drop; ``dry_run`` only reports the current level (a request refused before the bucket)."""
        level, at = self._levels.get(token, (0.0, now))
        level = max(0.0, level - (now - at) * drain_per_second)
        if dry_run:
            self._levels[token] = (level, now)
            return BucketResult(False, min(size, round(level)), 0.0)
        if level + 1 > size:
            self._levels[token] = (level, now)
            return BucketResult(False, min(size, round(level)), (level + 1 - size) / drain_per_second)
        level += 1
        self._levels[token] = (level, now)
        return BucketResult(True, min(size, max(1, round(level))), 0.0)

    def reset(self) -> None:
        self._levels.clear()


class WriteLocks:
    """A write holds its lock until it finishes, but never longer than ``ttl`` seconds."""

    def __init__(self) -> None:
        self._held: dict[str, float] = {}  # key -> expiry

    def acquire(self, key: str, now: float, ttl: float) -> bool:
        expiry = self._held.get(key)
        if expiry is not None and expiry > now:
            return False
        self._held[key] = now + ttl
        return True

    def release(self, key: str) -> None:
        self._held.pop(key, None)
