"""Behaviour both limiters share, run against LocalLimiter and RedisLimiter (real Redis).

Concurrency is measured in the test (all holders run on this event loop); the cross-process case
with a real second process is in ``test_redis_processes.py``. Wall-clock bounds are generous.
"""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest
import respx

from applications.client import ShoptetClient
from applications.premium import PremiumApplication
from worker.errors import RetryableError
from worker.limiter import Limiter, Pacing
from worker.redis_limiter import RedisLimiter
from worker.store import Install

from .conftest import LimiterKit


class Gauge:
    """Holders inside a slot right now, and the most ever seen at once."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.done = 0

    async def hold(self, limiter: Limiter, key: str, seconds: float) -> None:
        async with limiter.slot(key):
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                await asyncio.sleep(seconds)
            finally:
                self.active -= 1
        self.done += 1


async def test_twenty_holders_of_one_key_never_exceed_three(kit: LimiterKit) -> None:
    first, second = kit.pair()
    gauge = Gauge()
    holders = [gauge.hold(first if i % 2 else second, "token-a", 0.05) for i in range(20)]
    await asyncio.wait_for(asyncio.gather(*holders), 30)
    assert gauge.done == 20
    assert gauge.peak == 3


async def test_host_cap_of_fifty_holds(kit: LimiterKit) -> None:
    first, second = kit.pair()
    gauge = Gauge()
    # 40 tokens x 3 holders: every token slot is free, so only the host cap can hold them back.
    holders = [gauge.hold(first if i % 2 else second, f"token-{i % 40}", 0.3) for i in range(120)]
    await asyncio.wait_for(asyncio.gather(*holders), 60)
    assert gauge.done == 120
    assert gauge.peak == 50


async def test_saturated_key_does_not_delay_another_key(kit: LimiterKit) -> None:
    limiter = kit.new()
    release = asyncio.Event()
    three_in = asyncio.Event()
    entered = 0

    async def hold_a() -> None:
        nonlocal entered
        async with limiter.slot("token-a"):
            entered += 1
            if entered == 3:
                three_in.set()
            await release.wait()

    holders = [asyncio.create_task(hold_a()) for _ in range(4)]
    await asyncio.wait_for(three_in.wait(), 5)
    await asyncio.sleep(0.2)
    assert entered == 3  # the fourth is waiting for token-a

    started = time.monotonic()
    async with asyncio.timeout(2):
        async with limiter.slot("token-b"):
            waited = time.monotonic() - started
    assert waited < 0.5
    assert entered == 3

    release.set()
    await asyncio.wait_for(asyncio.gather(*holders), 10)
    assert entered == 4


async def test_cancelled_holder_and_waiter_free_their_slots(kit: LimiterKit) -> None:
    """Cancellation releases at once (Redis: long before the lease TTL would)."""
    limiter = kit.new(per_token=1)
    entered = asyncio.Event()

    async def hold() -> None:
        async with limiter.slot("token-a"):
            entered.set()
            await asyncio.sleep(3600)

    holder = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), 5)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.1)
    waiter.cancel()
    holder.cancel()
    for task in (waiter, holder):
        with pytest.raises(asyncio.CancelledError):
            await task
    async with asyncio.timeout(2):
        async with limiter.slot("token-a"):
            pass


async def test_pacing_from_bucket_filling(kit: LimiterKit) -> None:
    """190/200 makes the token's next slot wait ~the drain time; 10/200 does not; other tokens never."""
    waits: list[tuple[str, float]] = []
    # Drain 50/s so (190 + 1 - 140) drops take ~1 s instead of 5.1 s; the default numbers are
    # covered exactly in test_pacing.py.
    limiter = kit.new(pacing=Pacing(drain_per_second=50), on_wait=lambda k, s: waits.append((k, s)))
    expected = (190 + 1 - 140) / 50

    async with limiter.slot("token-a"):
        pass
    limiter.observe("token-a", {"X-RateLimit-Bucket-Filling": "190/200"})

    started = time.monotonic()
    async with limiter.slot("token-b"):
        pass
    assert time.monotonic() - started < 0.5

    started = time.monotonic()
    async with limiter.slot("token-a"):
        pass
    elapsed = time.monotonic() - started
    assert expected * 0.7 <= elapsed <= expected + 2
    assert waits[-1][0] == "token-a"
    assert expected * 0.7 <= waits[-1][1] <= expected + 2

    limiter.observe("token-a", {"X-RateLimit-Bucket-Filling": "10/200"})
    started = time.monotonic()
    async with limiter.slot("token-a"):
        pass
    assert time.monotonic() - started < 0.5
    assert waits[-1][1] < 0.5


async def test_the_pace_an_answer_reads_holds_back_the_requests_its_release_lets_in(kit: LimiterKit) -> None:
    """With Redis, the client read the pace after the slot was released: the release woke this
    process's waiters first, and six requests at a nearly full bucket all went within 0.1 s."""
    limiter = kit.new(pacing=Pacing(drain_per_second=50))
    expected = (190 + 1 - 140) / 50
    starts: list[float] = []
    began = time.monotonic()

    async def answer(request: httpx.Request) -> httpx.Response:
        starts.append(time.monotonic() - began)
        await asyncio.sleep(0.05)
        return httpx.Response(200, json={"data": {}}, headers={"X-RateLimit-Bucket-Filling": "190/200"})

    install = Install(user="shop", application="shoptet-premium", secrets={"token": "token-a"})
    with respx.mock(base_url="https://api.test") as api:
        api.get("/api/eshop").mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            client = ShoptetClient(
                http=http,
                application=PremiumApplication(),
                install=install,
                limiter=limiter,
                base_url="https://api.test",
            )
            await asyncio.gather(*(client.request("GET", "/api/eshop") for _ in range(6)))
    starts.sort()
    assert starts[2] < 0.5  # the first three went at once
    assert starts[3] >= expected * 0.7  # the next ones waited for the pace the first answers set


async def test_pacing_is_shared_between_processes(redis_url: str, prefix: str) -> None:
    first = RedisLimiter.from_url(redis_url, prefix=prefix, pacing=Pacing(drain_per_second=50))
    second = RedisLimiter.from_url(redis_url, prefix=prefix, pacing=Pacing(drain_per_second=50))
    try:
        first.observe("token-a", {"X-RateLimit-Bucket-Filling": "190/200"})
        async with first.slot("token-b"):  # lets first's pace write land (it runs as a task)
            pass
        started = time.monotonic()
        async with second.slot("token-a"):
            pass
        assert 0.5 <= time.monotonic() - started <= 3
    finally:
        await first.close()
        await second.close()


async def test_dead_instance_lease_expires(redis_url: str, prefix: str) -> None:
    """An instance that stops renewing (its process died) frees its slots after the lease TTL."""
    dead = RedisLimiter.from_url(redis_url, prefix=prefix, lease_ttl=1.0)
    alive = RedisLimiter.from_url(redis_url, prefix=prefix, lease_ttl=1.0)
    held = [dead.slot("token-a") for _ in range(3)]
    try:
        for cm in held:
            await cm.__aenter__()
        assert dead._renewer is not None
        dead._renewer.cancel()  # the process "dies": no renewal, no release

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                async with alive.slot("token-a"):
                    pass
        started = time.monotonic()
        async with asyncio.timeout(5):
            async with alive.slot("token-a"):
                pass
        assert time.monotonic() - started <= 1.0 + 1.0
    finally:
        for cm in held:
            await cm.__aexit__(None, None, None)
        await dead.close()
        await alive.close()


async def test_a_cancel_that_hits_a_redis_call_is_never_lost(redis_url: str, prefix: str) -> None:
    """A caller's timeout (a stop, a rebalance) that fires while the limiter talks to Redis must
    reach the caller. redis-py sends through ``asyncio.wait_for``, which on Python 3.11 swallows a
    cancel that comes as the send completes: about one attempt in twenty here went on into its
    slot after its deadline, and a waiter for a busy token polled on for good."""
    limiter = RedisLimiter.from_url(redis_url, prefix=prefix)
    rng = random.Random(7)
    outcomes = {"in time": 0, "timed out": 0, "cancel lost": 0}
    try:
        for _ in range(1000):
            try:
                async with asyncio.timeout(rng.uniform(0, 0.004)) as deadline:
                    async with limiter.slot("token-a"):
                        pass
            except TimeoutError:
                outcomes["timed out"] += 1
                continue
            outcomes["cancel lost" if deadline.expired() else "in time"] += 1
    finally:
        await limiter.close()
    assert outcomes["cancel lost"] == 0, outcomes
    assert outcomes["timed out"] > 50, outcomes  # the deadlines did hit calls


async def test_a_waiter_cancelled_while_its_call_still_runs_leaves_no_place_in_the_queue(
    redis_url: str, prefix: str
) -> None:
    """Cancelled during a script call that then still ran, a waiter was taken out of the queue
    before the call put it back: a ghost that held one of the token's places for as long as the
    token stayed busy (three of them stopped it)."""
    from worker.redis_limiter import _digest

    holder = RedisLimiter.from_url(redis_url, prefix=prefix, per_token=1)
    waiter = RedisLimiter.from_url(redis_url, prefix=prefix, per_token=1)
    real = waiter._acquire_in_turn_script
    gate, second_call = asyncio.Event(), asyncio.Event()
    calls = 0

    async def late_second_call(*, keys: list[str], args: list[object]) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            second_call.set()
            try:
                await gate.wait()  # still on its way when the waiter is cancelled
            except asyncio.CancelledError:  # and the cancel is lost (redis-py's wait_for, Python 3.11)
                await gate.wait()
        return await real(keys=keys, args=args)

    waiter._acquire_in_turn_script = late_second_call  # type: ignore[assignment]
    queue = f"{prefix}queue:{{{_digest('token-a')}}}"
    try:
        async with holder.slot("token-a"):
            waiting = asyncio.create_task(waiter.slot("token-a").__aenter__())
            await asyncio.wait_for(second_call.wait(), 10)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            gate.set()  # the call goes through after all, and queues the waiter again
            await asyncio.wait(set(waiter._background))
            assert await waiter._redis.zcard(queue) == 0
    finally:
        await holder.close()
        await waiter.close()


async def test_close_is_bounded_when_redis_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pace writes still on their way to a Redis that took connections and never answered held a
    worker's stop 5 s a round, 20 s past the pool's size."""
    from worker import redis_limiter

    monkeypatch.setattr(redis_limiter, "CLOSE_WAIT_SECONDS", 0.3)

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RedisLimiter.from_url(f"redis://127.0.0.1:{port}/0", prefix="hung:")
    try:
        for n in range(100):
            limiter.observe(f"token-{n}", {"X-RateLimit-Bucket-Filling": "190/200"})
        loop = asyncio.get_running_loop()
        began = loop.time()
        await limiter.close()
        assert loop.time() - began < 3.0
    finally:
        server.close()


async def test_a_long_wait_keeps_polling_at_the_cap(redis_url: str, prefix: str) -> None:
    """Minutes of waiting for a busy token are thousands of polls: the delay stays at the cap
    (``2**attempt`` past about 1,000 no longer converts to a float)."""
    waiter = RedisLimiter.from_url(redis_url, prefix=prefix, poll_interval=0.2)
    try:
        delays = [waiter._poll_delay(attempt) for attempt in (0, 10, 1_100, 100_000)]
    finally:
        await waiter.close()
    assert delays[0] <= 0.005
    assert all(0.1 <= d <= 0.2 for d in delays[1:])


async def no_slot_within(limiter: RedisLimiter, seconds: float) -> None:
    """``token-a`` stays taken for ``seconds``."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds), limiter.slot("token-a"):
            pass


async def slot_within(limiter: RedisLimiter, seconds: float) -> None:
    async with asyncio.timeout(seconds), limiter.slot("token-a"):
        pass


#: Short enough to see leases outlive it in a test, long enough that a loaded CI machine's stalled
#: event loop (0.6 s once let a renewal come too late) does not expire a lease that is renewed.
TEST_TTL = 1.5


async def test_held_lease_is_renewed_past_its_ttl(redis_url: str, prefix: str) -> None:
    holder = RedisLimiter.from_url(redis_url, prefix=prefix, per_token=1, lease_ttl=TEST_TTL)
    other = RedisLimiter.from_url(redis_url, prefix=prefix, per_token=1, lease_ttl=TEST_TTL)
    try:
        async with holder.slot("token-a"):
            await no_slot_within(other, 2.5 * TEST_TTL)
        await slot_within(other, 2)
    finally:
        await holder.close()
        await other.close()


async def test_a_lease_lost_while_its_request_runs_is_put_back(redis_url: str, prefix: str) -> None:
    """Redis restarted (its keys gone) while a request ran: the lease was dropped, not put back, and
    another worker got in past the token's limit."""
    holder = RedisLimiter.from_url(redis_url, prefix=prefix, per_token=1, lease_ttl=TEST_TTL)
    other = RedisLimiter.from_url(redis_url, prefix=prefix, per_token=1, lease_ttl=TEST_TTL)
    try:
        async with holder.slot("token-a"):
            keys = [k async for k in holder._redis.scan_iter(match=f"{prefix}*")]
            await holder._redis.delete(*keys)  # what a restart without persistence does
            await asyncio.sleep(TEST_TTL / 3 + 0.2)  # a renewal comes and puts the lease back
            await no_slot_within(other, 1.5 * TEST_TTL)
        await slot_within(other, 2)
    finally:
        await holder.close()
        await other.close()


async def test_nothing_token_like_reaches_redis(redis_url: str, prefix: str) -> None:
    limiter = RedisLimiter.from_url(redis_url, prefix=prefix)
    try:
        async with limiter.slot("secret-token-value"):
            limiter.observe("secret-token-value", {"X-RateLimit-Bucket-Filling": "190/200"})
        async with limiter.slot("other"):
            pass
        keys = [k.decode() async for k in limiter._redis.scan_iter(match=f"{prefix}*")]
        assert keys
        assert all("secret" not in k for k in keys)
    finally:
        await limiter.close()


async def test_many_requests_at_once_wait_for_a_connection_instead_of_failing(redis_url: str, prefix: str) -> None:
    """30 shops with a node concurrency of 10: 300 slots asked for at once, over 100 tokens."""
    limiter = RedisLimiter.from_url(redis_url, prefix=prefix)
    failures: list[BaseException] = []

    async def request(i: int) -> None:
        try:
            async with limiter.slot(f"token-{i % 100}"):
                await asyncio.sleep(0.05)
        except Exception as exc:
            failures.append(exc)

    try:
        await asyncio.wait_for(asyncio.gather(*(request(i) for i in range(300))), 60)
    finally:
        await limiter.close()
    assert failures == []


async def test_redis_down_is_retryable() -> None:
    limiter = RedisLimiter.from_url("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RetryableError):
            async with limiter.slot("token-a"):
                pass
    finally:
        await limiter.close()


async def test_waiters_of_every_process_take_a_tokens_slots_in_turn(redis_url: str, prefix: str) -> None:
    """A release woke only its own process's waiters, which took the slot again before another
    process's waiter polled: with a backlog in one worker, another worker's messages for the same
    shop (an ordered status update) waited out the whole backlog."""
    busy = RedisLimiter.from_url(redis_url, prefix=prefix, per_token=1)
    other = RedisLimiter.from_url(redis_url, prefix=prefix, per_token=1)
    stop = asyncio.Event()
    turns = {"busy": 0, "other": 0}

    async def loop(limiter: RedisLimiter, name: str) -> None:
        while not stop.is_set():
            async with limiter.slot("token-a"):
                turns[name] += 1
                await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(loop(busy, "busy")) for _ in range(5)]
    try:
        await asyncio.sleep(0.2)  # the busy process has the token, and a queue of its own
        tasks.append(asyncio.create_task(loop(other, "other")))
        await asyncio.sleep(2)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await busy.close()
        await other.close()
    # one waiter of six: about a sixth of the turns (it got one in twelve seconds)
    assert turns["other"] >= 5, turns
