"""RedisLimiter across real OS processes: the cap holds, and a killed process's slots come free."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from worker.redis_limiter import RedisLimiter

from .holder_process import SharedCounter, hold_once

SCRIPT = Path(__file__).with_name("holder_process.py")
REPO = Path(__file__).resolve().parents[2]


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def _expect_line(proc: asyncio.subprocess.Process, expected: str) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if line.decode().strip() != expected:
        stderr = await proc.stderr.read() if proc.stderr else b""
        pytest.fail(f"holder process said {line!r}, stderr: {stderr.decode()[-2000:]}")


async def test_two_processes_never_exceed_three(redis_url: str, redis: Redis, prefix: str) -> None:
    proc = await _spawn(redis_url, prefix, "token-a", "run", "10", "0.15")
    limiter = RedisLimiter.from_url(redis_url, prefix=prefix)
    counter = SharedCounter(redis, prefix)
    try:
        await _expect_line(proc, "ready")
        await asyncio.wait_for(asyncio.gather(*(hold_once(limiter, counter, "token-a", 0.15) for _ in range(10))), 60)
        await _expect_line(proc, "done 10")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert await counter.peak() == 3
        assert int(await redis.get(f"{prefix}test:active") or 0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await limiter.close()


async def test_killed_process_slots_expire(redis_url: str, prefix: str) -> None:
    ttl = 1.0
    proc = await _spawn(redis_url, prefix, "token-a", "hold", str(ttl))
    limiter = RedisLimiter.from_url(redis_url, prefix=prefix, lease_ttl=ttl)
    try:
        await _expect_line(proc, "held")
        with pytest.raises(TimeoutError):  # alive: renewed past its TTL, so still full
            async with asyncio.timeout(ttl * 2):
                async with limiter.slot("token-a"):
                    pass
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        started = time.monotonic()
        async with asyncio.timeout(ttl + 5):
            async with limiter.slot("token-a"):
                pass
        assert time.monotonic() - started <= ttl + 1.5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await limiter.close()
