"""A short-lived, per-process cache of installs for the hot path.

Every message needs its install, and reading one is two queries plus decrypting its secrets: in
the order-import benchmark that was about a sixth of the worker's CPU. Installs change rarely
(install, disable, a watermark per run), so a couple of seconds of staleness is harmless: a
disabled shop stops within ``ttl``, and a list batch that reads a watermark just before it moved
lists a few items again, never fewer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from worker.store.base import Install, InstallStore


class InstallCache:
    def __init__(self, store: InstallStore, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Install | None]] = {}

    async def get(self, user: str, application: str) -> Install | None:
        key = (user, application)
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1].model_copy(deep=True) if hit[1] is not None else None
        install = await self.store.get_install(user, application)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (now, install)
        return install.model_copy(deep=True) if install is not None else None

    def forget(self, user: str, application: str) -> None:
        self._entries.pop((user, application), None)
