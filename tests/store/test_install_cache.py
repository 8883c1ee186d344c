from __future__ import annotations

import asyncio
from typing import Any

from worker.store import Install
from worker.store.cache import InstallCache


class CountingStore:
    def __init__(self) -> None:
        self.reads = 0
        self.install = Install(user="u", application="a", settings={"w": 1})

    async def get_install(self, user: str, application: str) -> Install | None:
        self.reads += 1
        return self.install if user == "u" else None


async def test_reads_the_store_once_per_ttl_and_hands_out_copies() -> None:
    now = [0.0]
    store: Any = CountingStore()
    cache = InstallCache(store, ttl=2.0, clock=lambda: now[0])
    first = await cache.get("u", "a")
    assert first is not None
    first.settings["w"] = 99  # a node changing its copy must not change the cached one
    second = await cache.get("u", "a")
    assert second is not None and second.settings == {"w": 1}
    assert store.reads == 1
    assert await cache.get("missing", "a") is None
    assert await cache.get("missing", "a") is None
    assert store.reads == 2  # a missing install is cached too
    now[0] = 2.5
    await cache.get("u", "a")
    assert store.reads == 3
    cache.forget("u", "a")
    await cache.get("u", "a")
    assert store.reads == 4


async def test_messages_arriving_together_share_one_read() -> None:

    class SlowStore(CountingStore):
        async def get_install(self, user: str, application: str) -> Install | None:
            await asyncio.sleep(0.01)
            return await super().get_install(user, application)

    store: Any = SlowStore()
    cache = InstallCache(store, ttl=2.0)
    installs = await asyncio.gather(*(cache.get("u", "a") for _ in range(10)))
    assert store.reads == 1
    assert all(i is not None and i.user == "u" for i in installs)
    assert len({id(i) for i in installs}) == 10  # each caller still gets its own copy
