"""Redis-backed limiter: one per-token (and per-host) cap shared by every worker process on every node.

Shoptet counts connections per token no matter which process opens them, so the in-process
:class:`~worker.limiter.LocalLimiter` is only right for a single worker process.

Semaphore: a sorted set per key whose members are lease ids scored by their expiry time (Redis
server time, so clock skew between nodes does not matter). An atomic Lua script drops expired
leases and adds ours only while fewer than the limit remain. A held lease has a short TTL that a
background task renews while the request runs, and is released on exit (also on cancellation).
A process that dies stops renewing, so its slots come free after at most ``lease_ttl`` seconds.
Waiters poll with jitter (and are woken early when this process releases a slot of that key), and
take a token's slots in turn, whichever process they are in: a queue in Redis orders them by their
first attempt (a waiter that stops asking leaves it after a few seconds).

Pacing: :meth:`RedisLimiter.observe` turns ``X-RateLimit-Bucket-Filling`` into a delay with
:class:`~worker.limiter.Pacing` (the same arithmetic as the local limiter) and raises a per-key
"not before" timestamp in Redis; every process's next slot for that key waits until then.

Keys (``prefix`` defaults to ``shoptet-worker:limiter:``): ``<prefix>token:{<hash>}`` (leases),
``<prefix>pace:{<hash>}`` (not-before, ms), ``<prefix>queue:{<hash>}`` and ``<prefix>waiting:{<hash>}``
(the token's waiters), ``<prefix>host`` (host leases). The limiter key is
hashed again, so nothing token-like ever ends up in Redis; the hash tag keeps a token's two keys
in one Redis Cluster slot. The host cap is global across nodes: conservative when nodes have
different IPs, exact when they share one egress IP.

Redis errors while waiting for a slot become :class:`~worker.errors.RetryableError` (a Redis blip
should retry the message, not trash it); errors while renewing or releasing are logged, since the
lease expires on its own.

Every Redis call runs in a task of its own (:func:`_redis_call`): redis-py sends each command
through ``asyncio.wait_for`` (it has a socket timeout), and on Python 3.11 ``wait_for`` swallows a
cancel that comes as the send completes. Awaited in place, about one cancel in a hundred that hit
a call was lost: a waiter went on asking for a slot after its message was cancelled (at a stop or
a rebalance), and the renewer went on renewing after :meth:`RedisLimiter.close`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from worker.errors import RetryableError
from worker.limiter import OnWait, Pacing
from worker.tasks import background_task, cancel_and_wait

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "shoptet-worker:limiter:"
#: A waiter's poll delay doubles this many times at most (5 ms x 2**16 is far past any cap).
POLL_DOUBLINGS = 16

#: How soon a waiter that the next free slot goes to asks again (others: that times their place).
NEXT_IN_LINE_POLL_SECONDS = 0.02

#: Connections of a limiter's own client, and how long a call waits for one before it fails.
REDIS_MAX_CONNECTIONS = 64
REDIS_POOL_TIMEOUT_SECONDS = 20.0
#: How long ``close`` waits for pace writes and releases still on their way.
CLOSE_WAIT_SECONDS = 2.0

# Shared Lua prelude: Redis server time in milliseconds, and "keep the key alive at least this long".
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function keep(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
"""

# KEYS[1] lease set, KEYS[2] (optional) pace key; ARGV limit, ttl ms, lease id.
# Returns -1 when full, else the pacing wait left in ms (0 when none). Idempotent per lease id, so a
# retried call whose first attempt did run cannot count our own lease against us.
_ACQUIRE = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
keep(KEYS[1], 2 * ttl)
if KEYS[2] then
  local nb = tonumber(redis.call('GET', KEYS[2]) or '0')
  if nb > now then return nb - now end
end
return 0
"""
)

# A token's slots in turn: KEYS[1] lease set, KEYS[2] pace key, KEYS[3] queue (waiters by first
# attempt), KEYS[4] waiters by last attempt; ARGV limit, ttl ms, lease id (the waiter), stale ms.
# A waiter is granted only while fewer waiters are ahead of it than slots are free: a release woke
# only the releasing process's waiters, and a process with a backlog kept a token's slots from
# another process for minutes. Waiters that stopped asking (gone) leave the queue after stale ms.
# Returns like _ACQUIRE, but a waiting one gets -(waiters ahead of it + 1): the nearer the front, the
# sooner it asks again (a slot another process frees is seen only by asking).
_ACQUIRE_IN_TURN = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
local lease = ARGV[3]
local stale = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], lease) then
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - stale)) do
    redis.call('ZREM', KEYS[3], gone)
    redis.call('ZREM', KEYS[4], gone)
  end
  local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
  local ahead = redis.call('ZRANK', KEYS[3], lease)
  if not ahead then ahead = redis.call('ZCARD', KEYS[3]) end
  if free <= ahead then
    redis.call('ZADD', KEYS[3], 'NX', now, lease)
    redis.call('ZADD', KEYS[4], now, lease)
    keep(KEYS[3], 2 * stale)
    keep(KEYS[4], 2 * stale)
    return -(ahead + 1)
  end
  redis.call('ZREM', KEYS[3], lease)
  redis.call('ZREM', KEYS[4], lease)
end
redis.call('ZADD', KEYS[1], now + ttl, lease)
keep(KEYS[1], 2 * ttl)
local nb = tonumber(redis.call('GET', KEYS[2]) or '0')
if nb > now then return nb - now end
return 0
"""
)

# KEYS[1] lease set; ARGV ttl ms, lease id. 1 renewed, 2 put back: the lease was gone (Redis restarted
# or evicted it, or this process stalled past the TTL) while its request still runs. Dropped, it let
# others in past the limit: Redis must count every request that is really in flight.
_RENEW = (
    _NOW
    + """
local held = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
keep(KEYS[1], 2 * tonumber(ARGV[1]))
if held then return 1 end
return 2
"""
)

# KEYS[1] pace key; ARGV delay ms. Raises "not before" to now + delay (never lowers it).
_PACE = (
    _NOW
    + """
local delay = tonumber(ARGV[1])
local nb = now + delay
if nb > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%d', nb), 'PX', delay + 1000)
end
return 0
"""
)

# KEYS[1] pace key. Pacing wait left in ms.
_PACE_LEFT = (
    _NOW
    + """
local nb = tonumber(redis.call('GET', KEYS[1]) or '0')
if nb > now then return nb - now end
return 0
"""
)


#: What the renew script answers for a lease it had to put back.
LEASE_RESTORED = 2


T = TypeVar("T")


async def _redis_call(call: Awaitable[T]) -> T:
    """Await a Redis call so that a cancel of the caller always reaches the caller.

    The call runs as its own task and the caller waits with ``asyncio.wait``, which never swallows
    a cancel; the call's task is cancelled too, and may still finish (see the module doc)."""
    task = asyncio.ensure_future(call)
    try:
        await asyncio.wait((task,))
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise
    return task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a call nobody waits for any more as seen (asyncio logs an unretrieved error otherwise)."""
    if not task.cancelled():
        task.exception()


def _digest(key: str) -> str:
    """Hash the (already opaque) limiter key again: nothing token-like may reach Redis."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class _Wakeups:
    """Wake this process's waiters on a key as soon as this process releases a slot of it.

    Other processes' releases are only seen by polling; this just trims latency for the common
    case of many messages of one token in one process.
    """

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    async def wait(self, key: str, timeout: float) -> None:
        event, waiters = self._events.get(key, (asyncio.Event(), 0))
        self._events[key] = (event, waiters + 1)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11, a wait_for whose event is set just as
            # its task is cancelled returns and swallows the cancel, and a waiter under a caller's
            # own timeout (``async with asyncio.timeout(...)``) then polled on for good
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
        finally:
            current = self._events.get(key)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[key]
                else:
                    self._events[key] = (event, current[1] - 1)

    def notify(self, key: str) -> None:
        current = self._events.pop(key, None)
        if current is not None:
            current[0].set()


class RedisLimiter:
    """Per-token and per-host lease semaphores in Redis, plus shared pacing. See the module doc.

    ``on_wait(key, seconds)`` is called once per slot with the total wait (see :mod:`worker.limiter`).
    ``lease_ttl`` bounds how long a dead process's slots stay taken; ``poll_interval`` is the
    longest pause between two attempts of a waiter (jittered, starting much shorter).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        per_token: int = 3,
        per_host: int = 50,
        prefix: str = DEFAULT_PREFIX,
        lease_ttl: float = 10.0,
        poll_interval: float = 0.2,
        pacing: Pacing | None = None,
        on_wait: OnWait | None = None,
        owns_client: bool = False,
    ) -> None:
        self._redis = redis
        self._per_token = per_token
        self._per_host = per_host
        self._prefix = prefix
        self._ttl_ms = max(1, int(lease_ttl * 1000))
        self._renew_every = lease_ttl / 3
        self._poll_interval = poll_interval
        self._pacing = pacing or Pacing()
        self._on_wait = on_wait
        self._owns_client = owns_client
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._acquire_in_turn_script = redis.register_script(_ACQUIRE_IN_TURN)
        #: A waiter that has not asked again for this long has left the queue (its process died).
        self._stale_ms = max(2000, int(poll_interval * 10_000))
        self._renew_script = redis.register_script(_RENEW)
        self._pace_script = redis.register_script(_PACE)
        self._pace_left_script = redis.register_script(_PACE_LEFT)
        self._held: dict[str, str] = {}  # lease id -> lease set key
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._observing: dict[str, set[asyncio.Task[None]]] = {}  # key hash -> pending pace writes
        self._wakeups = _Wakeups()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        per_token: int = 3,
        per_host: int = 50,
        prefix: str = DEFAULT_PREFIX,
        **options: Any,
    ) -> RedisLimiter:
        """A limiter with its own Redis client (closed by :meth:`close`); ``options`` go to ``__init__``.

        The pool blocks for a free connection: redis-py's default one raises past 100 connections,
        and every waiter, release and renewal is a call, so 300 requests at once (30 shops at a node
        concurrency of 10) made healthy messages fail as "Redis unavailable".
        """
        # one retry of a call whose pooled connection went stale (Redis restarted, failed over):
        # without it every pooled connection failed its next call once Redis was back, a slot
        # request as a retry of its message. Safe: every script is idempotent per lease id.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        pool = BlockingConnectionPool.from_url(
            url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_POOL_TIMEOUT_SECONDS, retry=retry
        )
        client = Redis.from_pool(pool)  # its own pool: closed with it (see ``close``)
        return cls(client, per_token=per_token, per_host=per_host, prefix=prefix, owns_client=True, **options)

    # --- Limiter ------------------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        digest = _digest(key)
        token_key = f"{self._prefix}token:{{{digest}}}"
        pace_key = f"{self._prefix}pace:{{{digest}}}"
        host_key = f"{self._prefix}host"
        await self._settle_observations(digest)
        started = time.monotonic()
        queue = (f"{self._prefix}queue:{{{digest}}}", f"{self._prefix}waiting:{{{digest}}}")
        token_lease, pace = await self._acquire(token_key, self._per_token, pace_key, queue)
        try:
            # Pacing while holding the token slot costs nothing: the token may not send anyway.
            while pace > 0:
                await asyncio.sleep(pace)
                pace = await self._pace_left(pace_key)
            host_lease, _ = await self._acquire(host_key, self._per_host, None)
            try:
                if self._on_wait is not None:
                    self._on_wait(key, time.monotonic() - started)
                yield
            finally:
                await self._release(host_key, host_lease)
        finally:
            # the pace this request read lands before the token's next requests are let in: they
            # read it as they take the slot (cancelled meanwhile, the writes still go on)
            try:
                await self._settle_observations(digest)
            finally:
                await self._release(token_key, token_lease)

    def observe(self, key: str, headers: Mapping[str, str]) -> None:
        delay = self._pacing.delay(headers)
        if delay <= 0:
            return
        digest = _digest(key)
        try:
            task = asyncio.get_running_loop().create_task(self._push_pace(digest, delay))
        except RuntimeError:  # no loop: nothing to pace
            return
        pending = self._observing.setdefault(digest, set())
        pending.add(task)

        def done(t: asyncio.Task[None]) -> None:
            pending.discard(t)
            if not pending and self._observing.get(digest) is pending:
                del self._observing[digest]

        task.add_done_callback(done)

    async def close(self) -> None:
        """Stop renewing, flush pace writes, release whatever is still held, close an owned client."""
        if self._renewer is not None:
            await cancel_and_wait(self._renewer)
            self._renewer = None
        pending = [t for tasks in self._observing.values() for t in tasks] + list(self._background)
        if pending:  # bounded: with Redis hung they took 5 s a round, 20 s past the pool's size
            await asyncio.wait(pending, timeout=CLOSE_WAIT_SECONDS)
        for lease, lease_key in list(self._held.items()):
            await self._zrem(lease_key, lease)
        self._held.clear()
        if self._owns_client:
            await self._redis.aclose()

    # --- internals ----------------------------------------------------------------------------

    async def _acquire(
        self, lease_key: str, limit: int, pace_key: str | None, queue: tuple[str, str] | None = None
    ) -> tuple[str, float]:
        """Take a lease on ``lease_key``, waiting as long as it takes; returns (lease id, pacing wait s).

        With ``queue`` (a token's: its queue and its waiters' last attempts, see ``_ACQUIRE_IN_TURN``
        and its pace key) waiters of every process take the slots in turn."""
        lease = uuid.uuid4().hex
        args: list[str | int]
        if queue is not None and pace_key is not None:
            keys, args = [lease_key, pace_key, *queue], [limit, self._ttl_ms, lease, self._stale_ms]
            script = self._acquire_in_turn_script
        else:
            keys = [lease_key] if pace_key is None else [lease_key, pace_key]
            args, script = [limit, self._ttl_ms, lease], self._acquire_script
        attempt = 0
        call: asyncio.Future[Any] | None = None
        try:
            while True:
                call = asyncio.ensure_future(script(keys=keys, args=args))
                try:
                    result = int(await _redis_call(call))
                except RedisError as exc:
                    raise RetryableError(f"limiter: Redis unavailable ({type(exc).__name__})") from exc
                if result >= 0:
                    self._held[lease] = lease_key
                    self._ensure_renewer()
                    return lease, result / 1000
                call = None
                await self._wakeups.wait(lease_key, self._queued_delay(-result - 1, limit, attempt, queue))
                attempt += 1
        except BaseException:
            # no longer waiting: the ones behind must not wait for it to go stale
            self._spawn(self._abandon(call, lease_key, lease, queue))
            raise

    async def _abandon(
        self, call: asyncio.Future[Any] | None, lease_key: str, lease: str, queue: tuple[str, str] | None
    ) -> None:
        """Take out what an abandoned attempt may have added: its lease, its place in the queue.

        Only once its last script call has ended (cancelled, it may still run), and all in one
        transaction: a call that landed between two separate removals left the waiter in the queue
        and not among the waiters whose staleness is swept, and each such ghost took one of the
        token's places for as long as the token stayed busy (three stopped it)."""
        if call is not None:
            await asyncio.wait((call,))
            _retrieve(call)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(lease_key, lease)
                for key in queue or ():
                    pipe.zrem(key, lease)
                await _redis_call(pipe.execute())
        except RedisError as exc:
            log.warning("limiter.leave_failed", error=type(exc).__name__)  # the lease expires anyway
        finally:
            self._wakeups.notify(lease_key)

    def _queued_delay(self, ahead: int, limit: int, attempt: int, queue: tuple[str, str] | None) -> float:
        """How long a waiter sleeps before it asks again (a release of this process wakes it first).

        In a token's queue, by its place: one that the next free slots go to asks every 20 ms, so a
        slot another process frees is not left idle for a whole poll; further back, less often."""
        if queue is None:
            return self._poll_delay(attempt)
        turns_away = max(0, ahead - limit + 1)
        return min(self._poll_interval, NEXT_IN_LINE_POLL_SECONDS * (turns_away + 1))

    def _poll_delay(self, attempt: int) -> float:
        """Short first, then up to ``poll_interval``; jitter keeps processes from polling in lockstep.

        The exponent is capped: past about 1,000 attempts (minutes of waiting for a busy token),
        ``2**attempt`` no longer converts to a float and the wait failed with ``OverflowError``."""
        return min(self._poll_interval, 0.005 * 2 ** min(attempt, POLL_DOUBLINGS)) * random.uniform(0.5, 1.0)

    async def _pace_left(self, pace_key: str) -> float:
        try:
            return int(await _redis_call(self._pace_left_script(keys=[pace_key]))) / 1000
        except RedisError as exc:
            raise RetryableError(f"limiter: Redis unavailable ({type(exc).__name__})") from exc

    async def _push_pace(self, digest: str, delay: float) -> None:
        try:
            pace_key = f"{self._prefix}pace:{{{digest}}}"
            await _redis_call(self._pace_script(keys=[pace_key], args=[max(1, int(delay * 1000))]))
        except RedisError as exc:
            log.warning("limiter.pace_write_failed", error=type(exc).__name__)

    async def _settle_observations(self, digest: str) -> None:
        """Let this process's pending pace writes for the key land before it asks for a slot."""
        pending = self._observing.get(digest)
        if pending:
            # wait(), not gather(): if this caller is cancelled, the writes must still land.
            await asyncio.wait(list(pending))

    async def _release(self, lease_key: str, lease: str) -> None:
        """Release even when the holder is being cancelled: the ZREM runs to completion regardless."""
        self._held.pop(lease, None)
        await asyncio.shield(self._spawn(self._zrem(lease_key, lease)))

    async def _zrem(self, lease_key: str, lease: str) -> None:
        try:
            await _redis_call(self._redis.zrem(lease_key, lease))
        except RedisError as exc:
            log.warning("limiter.release_failed", error=type(exc).__name__)  # the lease expires anyway
        finally:
            self._wakeups.notify(lease_key)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = background_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Every third of the TTL, push every held lease's expiry forward; stop when none are held.

        On a fixed cadence, each round bounded by it: one round waiting out a stalled Redis (5 s)
        pushed the next past the TTL, another process took the slots, and six requests of a token
        ran at once."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self._held:
            due += self._renew_every
            await asyncio.sleep(max(0.0, due - loop.time()))
            held = list(self._held.items())
            try:
                async with asyncio.timeout(self._renew_every):
                    results = await asyncio.gather(
                        *(self._renew(k, lease) for lease, k in held), return_exceptions=True
                    )
            except TimeoutError:
                log.warning("limiter.renew_failed", error="TimeoutError")
                continue
            for outcome in results:
                if isinstance(outcome, BaseException):
                    log.warning("limiter.renew_failed", error=type(outcome).__name__)
                elif outcome == LEASE_RESTORED:
                    log.warning("limiter.lease_restored")  # it had expired: Redis restarted, or we stalled

    async def _renew(self, lease_key: str, lease: str) -> int:
        if lease not in self._held:  # released meanwhile: putting it back would hold a slot for nothing
            return 0
        call = asyncio.ensure_future(self._renew_script(keys=[lease_key], args=[self._ttl_ms, lease]))
        try:
            outcome = int(await _redis_call(call))
        except asyncio.CancelledError:  # a round past its time: the call may still land
            self._spawn(self._unrestore_after(call, lease_key, lease))
            raise
        await self._unrestore_after(call, lease_key, lease)
        return outcome

    async def _unrestore_after(self, call: asyncio.Future[Any], lease_key: str, lease: str) -> None:
        """Once the renewal's call has ended: a lease it put back that was released meanwhile (the
        release's ZREM came first) would hold a slot nobody uses until it expired; take it out."""
        await asyncio.wait((call,))
        if call.cancelled() or call.exception() is not None:
            return
        if int(call.result()) == LEASE_RESTORED and lease not in self._held:
            await self._zrem(lease_key, lease)
