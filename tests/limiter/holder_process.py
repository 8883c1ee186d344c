"""A second worker process for the limiter tests, and the Redis counter both sides share.

Run as a script (``python holder_process.py URL PREFIX KEY MODE ...``):

* ``run N HOLD`` - print ``ready``, then run N concurrent holders of KEY (each holds HOLD seconds,
  counted in the shared counter) and print ``done N``.
* ``hold TTL`` - take every slot of KEY (3) with leases of TTL seconds, print ``held`` and sleep
  until killed: a process that dies holding slots.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from redis.asyncio import Redis

from worker.redis_limiter import RedisLimiter

_PEAK = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""


class SharedCounter:
    """How many holders are inside a slot right now, across processes, and the most ever seen."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._active = f"{prefix}test:active"
        self._peak = f"{prefix}test:peak"
        self._enter = redis.register_script(_PEAK)

    async def enter(self) -> None:
        await self._enter(keys=[self._active, self._peak])

    async def exit(self) -> None:
        await self._redis.decr(self._active)

    async def peak(self) -> int:
        return int(await self._redis.get(self._peak) or 0)


async def hold_once(limiter: RedisLimiter, counter: SharedCounter, key: str, seconds: float) -> None:
    async with limiter.slot(key):
        await counter.enter()
        try:
            await asyncio.sleep(seconds)
        finally:
            await counter.exit()


async def _run(url: str, prefix: str, key: str, n: int, hold: float) -> None:
    redis = Redis.from_url(url)
    limiter = RedisLimiter.from_url(url, prefix=prefix)
    counter = SharedCounter(redis, prefix)
    print("ready", flush=True)
    await asyncio.gather(*(hold_once(limiter, counter, key, hold) for _ in range(n)))
    print(f"done {n}", flush=True)
    await limiter.close()
    await redis.aclose()


async def _hold(url: str, prefix: str, key: str, ttl: float) -> None:
    limiter = RedisLimiter.from_url(url, prefix=prefix, lease_ttl=ttl)
    async with AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(limiter.slot(key))
        print("held", flush=True)
        await asyncio.sleep(3600)


def main(argv: list[str]) -> None:
    url, prefix, key, mode, *rest = argv
    if mode == "run":
        asyncio.run(_run(url, prefix, key, int(rest[0]), float(rest[1])))
    elif mode == "hold":
        asyncio.run(_hold(url, prefix, key, float(rest[0])))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
