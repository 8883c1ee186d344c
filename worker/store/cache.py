"""A short-lived, per-process cache of installs for the hot path.

Every message needs its install, and reading one is two queries plus decrypting its secrets: in
the order-import benchmark that was about a sixth of the worker's CPU. Installs change rarely
(install, disable, a watermark per run), so a couple of seconds of staleness is harmless: a
disabled shop stops within ``ttl``, and a list batch that reads a watermark just before it moved
lists a few items again, never fewer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from worker.store.base import Install, InstallStore


class InstallCache:
    def __init__(self, store: InstallStore, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Install | None]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[Install | None]] = {}

    async def get(self, user: str, application: str) -> Install | None:
        key = (user, application)
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            install = hit[1]
        else:
            install = await self._load(key, now)
        return install.model_copy(deep=True) if install is not None else None

    async def _load(self, key: tuple[str, str], now: float) -> Install | None:
        """One read per key at a time: when an entry expires, the ten messages of that e-shop
        running at that moment wait for the same read instead of each running its own."""
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self.store.get_install(*key))
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        install = await asyncio.shield(loading)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (now, install)
        return install

    def forget(self, user: str, application: str) -> None:
        self._entries.pop((user, application), None)
