"""Cron starts on a real broker: one firing per tick per enabled install, however many schedulers.

Two schedulers over one SQLite store, each with its own connection (as two worker processes
would have), tick the same minutes concurrently; the start node's topic shows what was fired.
Minutes are passed to ``tick`` directly: no test waits for the clock.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from tests.ingress.helpers import TopicWatch
from tests.support import acknowledged_late, settings_for_test
from worker.app import Worker
from worker.envelope import H
from worker.runtime import Runtime
from worker.scheduler import LEASE_TTL_SECONDS, Firing, Scheduler, minute_of
from worker.settings import Settings
from worker.store import Install, open_store

pytestmark = pytest.mark.e2e

CRON = """\
name: cron-premium
application: shoptet-premium
imports: [tests.runtime.sample_nodes]
start:
  - cron: "*/5 * * * *"
  - manual: true
nodes:
  first: {node: test-passthrough, next: [out]}
  out: {sink: cron.out}
"""
#: A topology of no application fires once per tick, with no user.
CRON_NO_APP = """\
name: cron-plain
imports: [tests.runtime.sample_nodes]
start:
  - cron: "0 * * * *"
nodes:
  first: {node: test-flaky-once, next: [out]}
  out: {sink: cron.out}
"""
USERS = ["shop-a", "shop-b", "shop-c"]
DUE = datetime(2024, 5, 2, 10, 5, 17, tzinfo=UTC)  # */5 is due in this minute; 0 * * * * is not
HOUR = datetime(2024, 5, 2, 11, 0, 3, tzinfo=UTC)  # both are due


@pytest.fixture(scope="module")
def cron_settings(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("cron")
    return settings_for_test(kafka_bootstrap, tmp, graceful_timeout_seconds=5)


@pytest.fixture(scope="module")
async def worker(cron_settings: Settings) -> AsyncIterator[Worker]:
    from worker.topology import parse_topology

    started = Worker(cron_settings, node_names=[])
    tvs = [parse_topology(source, registry=started.registry) for source in (CRON, CRON_NO_APP)]
    await started.start(deploy=tvs)
    for user in USERS:
        await started.rt.store.add_install(Install(user=user, application="shoptet-premium", eshop_id=user[-1]))
    await started.rt.store.add_install(Install(user="shop-off", application="shoptet-premium", enabled=False))
    await started.rt.store.add_install(Install(user="addon-shop", application="shoptet"))  # another application
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture(scope="module")
async def other_process(worker: Worker, cron_settings: Settings) -> AsyncIterator[Runtime]:
    """The same runtime with its own store connection: the second worker process's view."""
    store = await open_store(cron_settings)
    try:
        yield dataclasses.replace(worker.rt, store=store)
    finally:
        await store.close()


@pytest.fixture
async def watch(worker: Worker) -> TopicWatch:
    topics = {node: worker.rt.topics.node(node) for node in ("test-passthrough", "test-flaky-once")}
    return await TopicWatch.begin(worker.rt.bootstrap_servers, topics)


def _minute(base: datetime, days: int) -> datetime:
    """Each test ticks its own day, so the firings' leases never meet another test's."""
    return base + timedelta(days=days)


async def test_two_schedulers_fire_once_per_tick_per_install(
    worker: Worker, other_process: Runtime, watch: TopicWatch
) -> None:
    one, two = Scheduler(worker.rt, "worker-1"), Scheduler(other_process, "worker-2")
    tick_1, tick_2 = _minute(DUE, 1), _minute(DUE, 1) + timedelta(minutes=5)

    first = await asyncio.gather(one.tick(tick_1), two.tick(tick_1), one.tick(tick_1), two.tick(tick_1))
    assert sum(first) == len(USERS)
    second = await asyncio.gather(two.tick(tick_2), one.tick(tick_2 + timedelta(seconds=30)))
    assert sum(second) == len(USERS)

    started = await watch.new("test-passthrough")
    assert collections.Counter(key for key, _ in started) == {user.encode(): 2 for user in USERS}
    for key, message in started:
        assert message.headers[H.USER] == key.decode()  # type: ignore[union-attr]
        assert message.headers[H.APPLICATION] == "shoptet-premium"
        assert message.headers[H.TOPOLOGY_NAME] == "cron-premium"
        assert message.body == {}
    assert await watch.new("test-flaky-once") == []  # cron-plain is not due at :05


async def test_minutes_that_are_not_due_fire_nothing(worker: Worker, watch: TopicWatch) -> None:
    scheduler = Scheduler(worker.rt, "worker-1")
    minute = _minute(DUE, 2)

    assert await scheduler.tick(minute + timedelta(minutes=1)) == 0
    assert await scheduler.tick(minute - timedelta(minutes=1)) == 0
    await watch.assert_nothing_new()


async def test_topology_without_application_fires_once_with_no_user(
    worker: Worker, other_process: Runtime, watch: TopicWatch
) -> None:
    hour = _minute(HOUR, 3)
    counts = await asyncio.gather(Scheduler(worker.rt, "w1").tick(hour), Scheduler(other_process, "w2").tick(hour))

    assert sum(counts) == len(USERS) + 1
    [(key, message)] = await watch.new("test-flaky-once")
    assert key is None and H.USER not in message.headers
    assert message.headers[H.TOPOLOGY_NAME] == "cron-plain"


async def test_a_disabled_topology_does_not_fire(
    worker: Worker, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker.rt.catalog.current["cron-premium"], "enabled", False)

    assert await Scheduler(worker.rt, "w1").tick(_minute(DUE, 4)) == 0
    await watch.assert_nothing_new()


async def test_a_firing_whose_claimer_died_is_fired_by_another_scheduler(
    worker: Worker, other_process: Runtime, watch: TopicWatch
) -> None:
    """The dead process claimed shop-a's firing and never published: its claim expires, and the
    re-check of that minute by a live scheduler fires it; shop-a is fired once, not zero times."""
    minute = minute_of(_minute(DUE, 5))
    tv = worker.rt.catalog.active("cron-premium")
    assert tv is not None
    shop_a = await worker.rt.store.get_install("shop-a", "shoptet-premium")
    lease = Firing(tv, tv.topology.start[0], minute, shop_a).lease_name
    claim_ttl = 0.5
    assert await other_process.store.acquire_lease(lease, "dead-worker:1", claim_ttl)
    live = Scheduler(worker.rt, "worker-1", claim_ttl_seconds=claim_ttl, start_timeout_seconds=0.4)

    assert await live.tick(minute) == len(USERS) - 1  # shop-a is still claimed
    await asyncio.sleep(claim_ttl + 0.1)  # let the claim expire (expiry is the store's wall clock)
    assert await live.tick(minute) == 1
    assert await live.tick(minute) == 0

    started = collections.Counter(key for key, _ in await watch.new("test-passthrough"))
    assert started == {user.encode(): 1 for user in USERS}


async def tick_while_the_broker_is_down(
    scheduler: Scheduler, worker: Worker, monkeypatch: pytest.MonkeyPatch, minute: datetime
) -> None:
    """A tick whose every start fails: the broker does not answer."""

    async def broker_down(topic: str, message: object) -> object:
        raise ConnectionError("broker unreachable")

    with monkeypatch.context() as patched:
        patched.setattr(worker.rt, "send", broker_down)
        assert await scheduler.tick(minute) == 0


async def test_failed_start_gives_the_firing_back(
    worker: Worker, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = Scheduler(worker.rt, "worker-1")
    minute = _minute(DUE, 6)
    await tick_while_the_broker_is_down(scheduler, worker, monkeypatch, minute)
    assert await scheduler.tick(minute) == len(USERS)
    assert len(await watch.new("test-passthrough")) == len(USERS)


async def test_a_start_the_broker_acknowledges_late_fires_once(
    worker: Worker, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given up after its timeout, the start was still in the producer's batch and went out all the
    same, while its claim was let go and the minute's re-check fired it again: twice."""
    scheduler = Scheduler(worker.rt, "worker-1", claim_ttl_seconds=0.5, start_timeout_seconds=0.2)
    minute = _minute(DUE, 20)
    with monkeypatch.context() as patched:
        patched.setattr(worker.rt, "send", acknowledged_late(worker.rt.send, 0.7))
        assert await scheduler.tick(minute) == len(USERS)
    assert await scheduler.tick(minute) == 0  # the re-check: every firing is confirmed
    started = collections.Counter(key for key, _ in await watch.new("test-passthrough"))
    assert started == {user.encode(): 1 for user in USERS}


async def test_a_sent_start_whose_confirmation_the_store_refuses_once_fires_once(
    worker: Worker, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The confirmation failing raised out of the tick: its minute was re-checked once the claim
    expired, and the start that had gone out went out again."""
    scheduler = Scheduler(worker.rt, "worker-1", claim_ttl_seconds=0.5, start_timeout_seconds=0.2)
    minute = _minute(DUE, 30)
    acquire = worker.rt.store.acquire_lease
    refused: list[str] = []

    async def refuse_first_confirmation(name: str, owner: str, ttl: float) -> bool:
        if ttl == LEASE_TTL_SECONDS and not refused:
            refused.append(name)
            raise ConnectionError("store failover")
        return await acquire(name, owner, ttl)

    with monkeypatch.context() as patched:
        patched.setattr(worker.rt.store, "acquire_lease", refuse_first_confirmation)
        assert await scheduler.tick(minute) == len(USERS)
    assert refused and minute_of(minute) not in scheduler._failed_minutes
    await asyncio.sleep(0.6)  # past the claim
    assert await scheduler.tick(minute) == 0  # the re-check: every firing is confirmed
    started = collections.Counter(key for key, _ in await watch.new("test-passthrough"))
    assert started == {user.encode(): 1 for user in USERS}


def confirmations_refused_until_set(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The store takes claims but refuses every day-long confirmation until the event is set."""
    acquire = worker.rt.store.acquire_lease
    store_back = asyncio.Event()

    async def refuse_confirmations(name: str, owner: str, ttl: float) -> bool:
        if ttl == LEASE_TTL_SECONDS and not store_back.is_set():
            raise ConnectionError("store failover")
        return await acquire(name, owner, ttl)

    monkeypatch.setattr(worker.rt.store, "acquire_lease", refuse_confirmations)
    return store_back


async def test_a_start_whose_confirmation_outlasts_its_re_checks_is_not_caught_up_again(
    worker: Worker, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store away for longer than the minute's re-checks: the confirmation was given up, the
    claim expired, and the catch-up once the store answered fired the sent start a second time."""
    from worker import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "RECHECK_MINUTES", 0)  # re-checks over once the claim is
    monkeypatch.setattr(scheduler_module, "CONFIRM_RETRY_MAX_SECONDS", 0.1)
    scheduler = Scheduler(worker.rt, "worker-1", claim_ttl_seconds=0.5, start_timeout_seconds=0.2)
    minute = datetime(2030, 6, 1, 10, 5, tzinfo=UTC)  # after the deploy and the installs
    store_back = confirmations_refused_until_set(worker, monkeypatch)
    try:
        assert await scheduler.tick(minute) == len(USERS)
        await asyncio.sleep(0.6)  # past the claims
        assert await scheduler.catch_up([minute]) == 0
        store_back.set()
        for _ in range(100):
            if not scheduler._confirming:
                break
            await asyncio.sleep(0.05)
        assert not scheduler._confirming  # confirmed once the store answered
        assert await Scheduler(worker.rt, "worker-2").catch_up([minute]) == 0
    finally:
        await scheduler.stop()
    started = collections.Counter(key for key, _ in await watch.new("test-passthrough"))
    assert started == {user.encode(): 1 for user in USERS}


async def test_a_stop_tries_once_more_to_confirm_the_starts_waiting_for_the_store(
    worker: Worker, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers restarted once the store was back: the confirmations still waiting in their backoff
    were cancelled untried, and the next worker's catch-up fired those starts a second time."""
    from worker import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "RECHECK_MINUTES", 0)
    monkeypatch.setattr(scheduler_module, "CONFIRM_RETRY_FIRST_SECONDS", 60.0)  # asleep at the stop
    scheduler = Scheduler(worker.rt, "worker-1", claim_ttl_seconds=0.5, start_timeout_seconds=0.2)
    minute = datetime(2030, 6, 2, 10, 5, tzinfo=UTC)
    store_back = confirmations_refused_until_set(worker, monkeypatch)
    assert await scheduler.tick(minute) == len(USERS)
    assert len(scheduler._confirming) == len(USERS)
    store_back.set()
    await scheduler.stop()
    await asyncio.sleep(0.6)  # past the claims
    assert await Scheduler(worker.rt, "worker-2").catch_up([minute]) == 0
    started = collections.Counter(key for key, _ in await watch.new("test-passthrough"))
    assert started == {user.encode(): 1 for user in USERS}


async def test_a_stop_while_the_confirmation_waits_for_the_store_still_confirms(
    worker: Worker, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled in the confirmation's backoff, the claim expired and another worker's re-check
    fired the minute a second time."""
    scheduler = Scheduler(worker.rt, "worker-1", claim_ttl_seconds=0.5, start_timeout_seconds=0.2)
    minute = minute_of(_minute(DUE, 31))
    acquire = worker.rt.store.acquire_lease
    refused = asyncio.Event()

    async def refuse_first_confirmation(name: str, owner: str, ttl: float) -> bool:
        if ttl == LEASE_TTL_SECONDS and not refused.is_set():
            refused.set()
            raise ConnectionError("store failover")
        return await acquire(name, owner, ttl)

    with monkeypatch.context() as patched:
        patched.setattr(worker.rt.store, "acquire_lease", refuse_first_confirmation)
        ticking = asyncio.create_task(scheduler.tick(minute))
        await asyncio.wait_for(refused.wait(), 10)
        await asyncio.sleep(0.05)  # in the confirmation's backoff
        ticking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ticking
    await asyncio.sleep(0.6)  # past the claim
    assert await Scheduler(worker.rt, "worker-2").tick(minute) == 0  # another worker's re-check
    started = collections.Counter(key for key, _ in await watch.new("test-passthrough"))
    assert started == {user.encode(): 1 for user in USERS}


async def test_a_start_that_failed_through_a_long_outage_is_caught_up(
    worker: Worker, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed firings were re-checked for two minutes only: a daily import due while the broker
    was away three minutes or more was skipped that day."""
    scheduler = Scheduler(worker.rt, "worker-1")
    minute = _minute(DUE, 21)
    await tick_while_the_broker_is_down(scheduler, worker, monkeypatch, minute)
    scheduler.ticked(minute)
    later = minute + timedelta(minutes=5)  # the outage outlasted the re-checks
    missed, _ = scheduler.minutes_to_fire(later)
    assert minute_of(minute) in missed
    scheduler.ticked(later)  # nothing failed this time: the next loops start from here
    assert scheduler.minutes_to_fire(later + timedelta(minutes=1))[0] == []


def test_minutes_to_fire_rechecks_recent_and_catches_up_missed() -> None:
    scheduler = Scheduler(cast(Runtime, None), "worker-1")
    now = datetime(2024, 5, 2, 10, 7, 30, tzinfo=UTC)
    at = [datetime(2024, 5, 2, 10, m, tzinfo=UTC) for m in range(60)]
    recent = [at[5], at[6], at[7]]

    missed, rechecked = scheduler.minutes_to_fire(now)  # just started: the last hour
    assert rechecked == recent
    assert missed == [at[7] - timedelta(minutes=k) for k in range(60, 2, -1)]
    scheduler._last_minute = at[6]
    assert scheduler.minutes_to_fire(now) == ([], recent)
    scheduler._last_minute = at[0]  # stalled: six minutes missed, four of them before the re-check
    assert scheduler.minutes_to_fire(now) == ([at[1], at[2], at[3], at[4]], recent)


async def test_missed_ticks_fire_once_per_start_the_latest_only(worker: Worker, watch: TopicWatch) -> None:
    """An hour without a running worker (a long deploy, an outage) dropped its ticks: a nightly
    sync at 03:00 did not run that day. Now each start fires its latest missed tick, once."""
    hour = [datetime(2030, 5, 2, 10, m, tzinfo=UTC) for m in range(60)]  # after the deploy and installs
    scheduler = Scheduler(worker.rt, "w1")

    assert await scheduler.catch_up(hour) == len(USERS) + 1  # */5: 10:55 for each install; 0 *: 10:00
    premium = await watch.new("test-passthrough")
    assert sorted(message.headers[H.USER] for _, message in premium) == USERS
    assert len(await watch.new("test-flaky-once")) == 1
    assert await Scheduler(worker.rt, "w2").tick(hour[55]) == 0  # that is the 10:55 tick: fired once


async def test_a_minute_from_before_the_deploy_or_the_install_is_not_fired_late(
    worker: Worker, watch: TopicWatch
) -> None:
    """Re-checked or caught up later, a minute from before the topology was deployed (or enabled,
    or its cron moved) or the install added fired anyway, minutes late."""
    scheduler = Scheduler(worker.rt, "w1")
    minute = _minute(DUE, 7)  # 2024: before this module deployed its topologies and added installs
    assert await scheduler.tick(minute, past=True) == 0
    assert await scheduler.catch_up([minute]) == 0
    await watch.assert_nothing_new()

    deployment = worker.rt.catalog.current["cron-premium"]
    worker.rt.catalog.current["cron-premium"] = dataclasses.replace(deployment, deployed_at="2024-01-01T00:00:00+00:00")
    try:
        assert await scheduler.tick(minute, past=True) == 0  # deployed by then, but no install was
    finally:
        worker.rt.catalog.current["cron-premium"] = deployment
    assert await scheduler.tick(minute) == len(USERS)  # the current minute is the current minute


async def test_a_redeploy_that_kept_the_crons_still_catches_up_a_tick_missed_before_it(
    worker: Worker, watch: TopicWatch
) -> None:
    """A long deploy usually ships changed files: their pointers' new deployed_at made every tick
    missed during it count as from before the deploy, and the nightly sync skipped its night."""
    minute = datetime(2030, 7, 1, 10, 5, tzinfo=UTC)
    deployment = worker.rt.catalog.current["cron-premium"]
    redeployed = dataclasses.replace(
        deployment, deployed_at="2030-07-01T10:07:00+00:00", crons_since="2024-01-01T00:00:00+00:00"
    )
    worker.rt.catalog.current["cron-premium"] = redeployed
    try:
        assert await Scheduler(worker.rt, "w1").catch_up([minute]) == len(USERS)
    finally:
        worker.rt.catalog.current["cron-premium"] = deployment
    assert len(await watch.new("test-passthrough")) == len(USERS)


def test_minute_of_is_utc() -> None:
    from zoneinfo import ZoneInfo

    prague = datetime(2024, 5, 2, 12, 5, 59, 999, tzinfo=ZoneInfo("Europe/Prague"))
    assert minute_of(prague) == datetime(2024, 5, 2, 10, 5, tzinfo=UTC)
    assert minute_of(datetime(2024, 5, 2, 10, 5, 1)) == datetime(2024, 5, 2, 10, 5, tzinfo=UTC)


async def test_run_ticks_the_current_and_recent_minutes_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = Scheduler(cast(Runtime, None), "worker-1")
    ticked: list[datetime] = []
    first_ticked, first_round = asyncio.Event(), asyncio.Event()

    async def record(now: datetime, *, past: bool = False) -> int:
        ticked.append(now)
        first_ticked.set()
        if len(ticked) == 3:
            first_round.set()
        return 0

    caught_up: list[list[datetime]] = []

    async def catch_up(minutes: list[datetime]) -> int:
        caught_up.append(minutes)
        return 0

    monkeypatch.setattr(scheduler, "tick", record)
    monkeypatch.setattr(scheduler, "catch_up", catch_up)
    before = minute_of(datetime.now(UTC))
    scheduler.start()
    await asyncio.wait_for(first_ticked.wait(), 5)
    await scheduler.stop()

    # just started: the last hour before the current minute is caught up (latest per start),
    # and not re-checked minute by minute as well (a start fired for each of them too)
    current = ticked[0]  # `before`, or the next minute if the clock crossed a boundary meanwhile
    assert current >= before
    assert caught_up[0] == [current - timedelta(minutes=k) for k in range(60, 0, -1)]
    assert scheduler._task is None

    # running: the last minutes are re-checked, then the current one ticked
    ticked.clear()
    scheduler._last_minute = minute_of(datetime.now(UTC)) - timedelta(minutes=1)
    scheduler.start()
    await asyncio.wait_for(first_round.wait(), 5)
    await scheduler.stop()
    current = ticked[2]
    assert ticked[:3] == [current - timedelta(minutes=2), current - timedelta(minutes=1), current]


async def test_the_scheduler_purges_expired_leases_once_an_interval(worker: Worker) -> None:
    store = worker.rt.store
    scheduler = Scheduler(worker.rt, "w1")
    await store.acquire_lease("webhook:x", "a", 0.01)
    await asyncio.sleep(0.05)
    await scheduler.purge_leases()
    assert await store.purge_expired_leases() == 0  # the scheduler deleted it already

    await store.acquire_lease("webhook:y", "a", 0.01)
    await asyncio.sleep(0.05)
    await scheduler.purge_leases()  # within the interval: left for the next purge
    assert await store.purge_expired_leases() == 1


async def test_a_redeploy_that_moves_a_cron_start_does_not_fire_its_minute_again(
    worker: Worker, watch: TopicWatch
) -> None:
    """Firings are known by what the start is, not by its place in ``start:``."""
    from worker.topology import parse_topology

    source = CRON_NO_APP.replace("cron-plain", "cron-moved").replace('"0 * * * *"', '"31 4 * * *"')
    moved = source.replace("start:\n", "start:\n  - manual: true\n")
    minute = datetime(2024, 5, 9, 4, 31, tzinfo=UTC)  # */5 is not due
    scheduler = Scheduler(worker.rt, "worker-1")
    worker.rt.catalog.add_local(parse_topology(source, registry=worker.registry))
    try:
        assert await scheduler.tick(minute) == 1
        worker.rt.catalog.add_local(parse_topology(moved, registry=worker.registry))
        active = worker.rt.catalog.active("cron-moved")
        assert active is not None and active.topology.start[1].cron == "31 4 * * *"
        assert await scheduler.tick(minute + timedelta(seconds=30)) == 0
    finally:
        latest = worker.rt.catalog.active("cron-moved")
        assert latest is not None
        worker.rt.catalog.add_local(latest, enabled=False)  # the module's other tests tick it no more
    assert len(await watch.new("test-flaky-once")) == 1


async def test_a_redeploy_that_changes_the_cron_does_not_fire_the_minute_again(worker: Worker) -> None:
    """The lease named the cron: a worker on the old version and one on the new (*/10 -> */5) both
    fired 10:00, each under its own lease."""
    tv = worker.rt.catalog.active("cron-premium")
    assert tv is not None
    start = tv.topology.start[0]
    moved = start.model_copy(update={"cron": "*/10 * * * *"})
    install = await worker.rt.store.get_install("shop-a", "shoptet-premium")
    minute = minute_of(_minute(DUE, 22))
    assert Firing(tv, start, minute, install).lease_name == Firing(tv, moved, minute, install).lease_name


async def test_a_minute_an_older_worker_fired_is_not_fired_again(worker: Worker, watch: TopicWatch) -> None:
    """Older workers claim a firing by a name with its cron: in a rolling upgrade, old and new
    workers each fired the minute once under their own name."""
    tv = worker.rt.catalog.active("cron-premium")
    assert tv is not None
    minute = minute_of(_minute(DUE, 23))
    for user in USERS:
        install = await worker.rt.store.get_install(user, "shoptet-premium")
        legacy = Firing(tv, tv.topology.start[0], minute, install).legacy_lease_name
        assert await worker.rt.store.acquire_lease(legacy, "old-worker:1", 60)
    assert await Scheduler(worker.rt, "new-worker").tick(minute) == 0
    await watch.assert_nothing_new()

    later = minute_of(_minute(DUE, 24))
    assert await Scheduler(worker.rt, "new-worker").tick(later) == len(USERS)
    install = await worker.rt.store.get_install(USERS[0], "shoptet-premium")
    held = await worker.rt.store.lease_holder(Firing(tv, tv.topology.start[0], later, install).legacy_lease_name)
    assert held is not None and held.startswith("new-worker:")  # an old worker skips it too


async def test_a_claim_the_store_cannot_take_is_caught_up(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = Scheduler(worker.rt, "worker-1")
    minute = minute_of(_minute(DUE, 25))

    async def store_down(*args: object, **kwargs: object) -> bool:
        raise ConnectionError("store unreachable")

    with monkeypatch.context() as patched:
        patched.setattr(worker.rt.store, "acquire_lease", store_down)
        with pytest.raises(ConnectionError):
            await scheduler.tick(minute)
    assert minute in scheduler._failed_minutes


async def test_a_start_cancelled_at_a_stop_keeps_its_minute_only_if_it_may_have_gone(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled with its start failed, the minute was held for a day: the start was lost."""
    scheduler = Scheduler(worker.rt, "worker-1", claim_ttl_seconds=0.5, start_timeout_seconds=0.2)
    tv = worker.rt.catalog.active("cron-premium")
    assert tv is not None

    sends: list[str] = []  # the cancel comes once every start is on its way, not during a claim
    all_sending = asyncio.Event()

    def sent(topic: str) -> None:
        sends.append(topic)
        if len(sends) >= len(USERS):  # each start's first record (its ledger start)
            all_sending.set()

    async def never(topic: str, message: object) -> object:
        sent(topic)
        await asyncio.Event().wait()
        raise AssertionError

    async def refused(topic: str, message: object) -> object:
        sent(topic)
        await asyncio.sleep(0.05)
        raise ConnectionError("broker refused")

    for day, send, kept in ((26, never, True), (27, refused, False)):
        minute = minute_of(_minute(DUE, day))
        sends.clear()
        all_sending.clear()
        with monkeypatch.context() as patched:
            patched.setattr(worker.rt, "send", send)
            ticking = asyncio.create_task(scheduler.tick(minute))
            await asyncio.wait_for(all_sending.wait(), 10)
            ticking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await ticking
        install = await worker.rt.store.get_install(USERS[0], "shoptet-premium")
        holder = await worker.rt.store.lease_holder(Firing(tv, tv.topology.start[0], minute, install).lease_name)
        assert (holder is not None) is kept, day


async def test_a_stop_with_a_store_that_hangs_is_bounded_however_many_starts_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last confirmation tries went one after another, 2 s each: fifteen sent starts held a stop
    up 30 s while the store hung, past the graceful stop of the consumers behind it."""
    import types

    from worker import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "STOP_CONFIRM_SECONDS", 0.2)

    class HangingStore:
        async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
            await asyncio.sleep(3600)
            return True

    runtime = cast(Runtime, types.SimpleNamespace(store=HangingStore()))
    scheduler = Scheduler(runtime, "worker-1")
    for n in range(15):
        waiting = asyncio.create_task(asyncio.sleep(3600))
        firing = cast(Firing, types.SimpleNamespace(lease_names=(f"cron:{n}", f"legacy:{n}")))
        scheduler._confirming[f"cron:{n}"] = (waiting, firing, f"owner-{n}")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await scheduler.stop()
    assert loop.time() - began < 2.0  # one bound for all fifteen (0.2 s), not fifteen in a row
