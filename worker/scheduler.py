"""Cron starts: each tick fires every due cron start once per enabled install, across all workers.

Every worker process runs a scheduler; they agree through leases in the install store rather than
by electing a leader, so nothing depends on one process staying alive. Each firing (topology,
start, minute, install) is claimed with a short lease, published, and only then confirmed with a
long one. A process that dies between claim and confirm leaves a claim that expires; every loop
also re-checks the last few minutes, so another process fires it, a little late, instead of never.
A scheduler that starts (or stalled) looks back an hour: ticks missed while no worker ran fire
once, late, per start only the latest one (as a cron daemon that was down runs a missed job once).
A minute from before the topology was deployed or enabled, or the install added, is not fired late.
Minutes are evaluated in UTC.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from croniter import croniter

from worker.runtime import Runtime
from worker.starter import start_process
from worker.store import Install
from worker.tasks import all_to_their_end, background_task, backoff_delays, cancel_and_wait, wait_renewing
from worker.topology import StartSpec, TopologyVersion

log = structlog.get_logger(__name__)

#: A confirmed firing's lease outlives any clock skew or re-check between workers.
LEASE_TTL_SECONDS = 86_400.0
#: A claim's lease: longer than a start may take (``START_TIMEOUT_SECONDS``), shorter than a minute.
CLAIM_TTL_SECONDS = 30.0
START_TIMEOUT_SECONDS = 10.0
#: Backoff of a sent firing's confirmation while the store does not answer.
CONFIRM_RETRY_FIRST_SECONDS = 0.5
CONFIRM_RETRY_MAX_SECONDS = 10.0
#: A stop's last try to confirm each sent firing still waiting for the store.
STOP_CONFIRM_SECONDS = 2.0
#: Minutes before the current one that every loop checks again (firings whose claimer died).
RECHECK_MINUTES = 2
#: Minutes back a scheduler looks when it starts, or after a stall, for ticks no worker fired.
CATCH_UP_MINUTES = 60
#: Starts published at once within a tick.
START_CONCURRENCY = 50
#: How often each scheduler deletes expired leases (its own firings' and the webhook dedup ones).
PURGE_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Firing:
    """One process a tick should start."""

    tv: TopologyVersion
    start: StartSpec
    minute: datetime
    install: Install | None

    @property
    def lease_name(self) -> str:
        """The firing's identity across workers and versions: the start by its target, not by its
        place in ``start:``, nor by its cron: a redeploy that changed the cron within the minute
        (a worker on the old version, one on the new) fired that minute twice. Two cron starts of
        one target due in the same minute would start the same process anyway."""
        who = f"{self.install.application}:{self.install.user}" if self.install else "-"
        return f"cron:{self.tv.name}:{self.start.to or ''}:{self.minute.isoformat()}:{who}"

    @property
    def legacy_lease_name(self) -> str:
        """The name workers before this one claim the firing by (with its cron): claimed too, so
        that old and new workers of a rolling upgrade do not each fire the minute once."""
        who = f"{self.install.application}:{self.install.user}" if self.install else "-"
        return f"cron:{self.tv.name}:{self.start.cron}:{self.start.to or ''}:{self.minute.isoformat()}:{who}"

    @property
    def lease_names(self) -> tuple[str, str]:
        return self.lease_name, self.legacy_lease_name


def minute_of(now: datetime) -> datetime:
    """The UTC minute ``now`` falls in (naive datetimes are taken as UTC)."""
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(second=0, microsecond=0)


def due_starts(tvs: list[TopologyVersion], minute: datetime) -> Iterator[tuple[TopologyVersion, StartSpec]]:
    for tv in tvs:
        for start in tv.topology.start:
            if start.cron and _matches(tv, start.cron, minute):
                yield tv, start


def _matches(tv: TopologyVersion, cron: str, minute: datetime) -> bool:
    """Whether ``cron`` is due; one that croniter cannot match (deployed before crons were checked
    as strictly) is logged and skipped, not allowed to end the tick for every other topology."""
    try:
        return bool(croniter.match(cron, minute))
    except Exception as exc:
        log.error("cron cannot be matched; skipped", topology=tv.name, cron=cron, error=str(exc))
        return False


class Scheduler:
    """Fires cron starts; ``tick`` is the unit (testable with any ``now``), ``run`` the loop.

    A topology with an ``application`` starts once per enabled install of it (keyed by the
    install's user); a topology without one starts once per tick with no user.
    """

    def __init__(
        self,
        runtime: Runtime,
        owner_id: str,
        *,
        claim_ttl_seconds: float = CLAIM_TTL_SECONDS,
        start_timeout_seconds: float = START_TIMEOUT_SECONDS,
    ) -> None:
        if start_timeout_seconds >= claim_ttl_seconds:
            raise ValueError("a start must time out before its claim expires")
        self.rt = runtime
        self.owner_id = owner_id
        self.claim_ttl_seconds = claim_ttl_seconds
        self.start_timeout_seconds = start_timeout_seconds
        self._task: asyncio.Task[None] | None = None
        self._last_minute: datetime | None = None
        #: Minutes whose firing failed (the broker or the store away) since the last loop.
        self._failed_minutes: set[datetime] = set()
        self._next_purge = 0.0
        #: Firings sent whose confirmation the store has not taken yet, by lease name, with the
        #: task that keeps trying: this scheduler never fires them again meanwhile (their claim has
        #: expired, and a catch-up after a long store outage took it and sent the start twice).
        self._confirming: dict[str, tuple[asyncio.Task[None], Firing, str]] = {}

    async def tick(self, now: datetime, *, past: bool = False) -> int:
        """Fire every cron start due in the minute of ``now``; returns how many processes this
        scheduler started (those another scheduler already fired are not counted). ``past``: the
        minute is re-checked later, so what did not exist then is left out."""
        minute = minute_of(now)
        due = [(tv, start, minute) for tv, start in due_starts(self.rt.catalog.active_all(), minute)]
        if past:
            due = [(tv, start, m) for tv, start, m in due if self._deployed_by(tv, m)]
        count, firings = await self._fire_all(await self._firings(due, past=past))
        if count:  # re-checks of past minutes usually start nothing: no log line for those
            log.info("cron tick", minute=minute.isoformat(), due=firings, started=count, owner=self.owner_id)
        return count

    async def catch_up(self, minutes: list[datetime]) -> int:
        """Ticks missed in ``minutes`` (oldest first) while no scheduler ran: per start, only the
        latest one due fires; a start every minute does not fire sixty times after an hour down."""
        latest: dict[tuple[str, str | None, str | None], tuple[TopologyVersion, StartSpec, datetime]] = {}
        active = self.rt.catalog.active_all()
        for minute in minutes:
            for tv, start in due_starts(active, minute):
                if self._deployed_by(tv, minute):
                    latest[(tv.name, start.cron, start.to)] = (tv, start, minute)
        count, firings = await self._fire_all(await self._firings(list(latest.values()), past=True))
        if count:
            log.info("missed cron ticks fired late", due=firings, started=count, owner=self.owner_id)
        return count

    def _deployed_by(self, tv: TopologyVersion, minute: datetime) -> bool:
        """Whether the topology ran with its cron starts as they are now, enabled, at ``minute``: a
        redeploy that moved a cron, or an enable, must not fire a minute from before it, late; one
        that kept them (``Deployment.crons_since``) must not lose the ticks missed before it."""
        deployment = self.rt.catalog.current.get(tv.name)
        if deployment is None or not deployment.crons_run_since:
            return True
        try:
            at = datetime.fromisoformat(deployment.crons_run_since)
        except ValueError:
            return True
        return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)) <= minute

    async def _firings(self, due: list[tuple[TopologyVersion, StartSpec, datetime]], *, past: bool) -> list[Firing]:
        """Each due start once per enabled install of its topology's application (or once, with no
        install, for a topology naming none)."""
        firings: list[Firing] = []
        installs: dict[str, list[Install]] = {}
        for tv, start, minute in due:
            application = tv.topology.application
            if application is None:
                firings.append(Firing(tv, start, minute, None))
                continue
            if application not in installs:
                installs[application] = await self.rt.store.list_installs(application, enabled_only=True)
            firings.extend(
                Firing(tv, start, minute, install)
                for install in installs[application]
                if not past or install.installed_at is None or install.installed_at <= minute
            )
        return firings

    async def _fire_all(self, firings: list[Firing]) -> tuple[int, int]:
        """(started, due)."""
        if not firings:
            return 0, 0
        limit = asyncio.Semaphore(START_CONCURRENCY)

        async def fire_limited(firing: Firing) -> bool:
            async with limit:
                return await self._fire(firing)

        # every firing to its end, also when the tick is cancelled (a stop): a plain gather ended
        # at the first cancelled firing, and the others settled their claims after the store closed
        fired = await all_to_their_end(*(fire_limited(f) for f in firings))
        return sum(outcome is True for outcome in fired), len(firings)

    async def _fire(self, firing: Firing) -> bool:
        """Claim, publish, confirm. False when another scheduler has it or publishing failed."""
        # a fresh owner per firing: re-ticking a minute in this process must not renew our own lease
        owner = f"{self.owner_id}:{uuid.uuid4().hex}"
        if firing.lease_name in self._confirming:
            return False  # sent already; its confirmation waits for the store
        try:
            if not await self._claim(firing, owner):
                return False
        except Exception:  # the store is away: the minute is caught up once it answers
            self._failed_minutes.add(firing.minute)
            raise
        install = firing.install
        sending = asyncio.ensure_future(
            start_process(
                self.rt,
                firing.tv,
                firing.start,
                user=install.user if install else None,
                body={},
                application=install.application if install else None,
            )
        )
        try:
            await self._outcome(sending, firing, owner)
        except asyncio.CancelledError:
            await asyncio.shield(self._stopped_while_sending(sending, firing, owner))
            raise
        except Exception as exc:
            # give the firing back so that a re-check (here or in another process) fires it
            self._failed_minutes.add(firing.minute)
            await self._set_leases(firing, owner, None)
            log.error(
                "cron start failed",
                topology=firing.tv.name,
                user=install.user if install else None,
                minute=firing.minute.isoformat(),
                reason=f"{type(exc).__name__}: {exc}",
            )
            return False
        try:
            await self._confirm(firing, owner)
        except asyncio.CancelledError:
            # a stop while the store did not answer: once more, shielded, or the claim expires and
            # another worker's re-check fires the minute a second time
            try:
                await asyncio.shield(self._set_leases(firing, owner, LEASE_TTL_SECONDS))
            except Exception as exc:
                _unconfirmed(firing, exc, "stopped before its claim was confirmed")
            raise
        return True

    async def _confirm(self, firing: Firing, owner: str) -> None:
        """Hold a sent firing's leases for a day. The start went out: a store failure here must not
        fail the tick (its re-check fired the minute again once the claim expired: twice), so the
        confirmation is retried until the minute's re-checks are over, and then, in the background,
        for as long as a catch-up could still fire the minute (see ``_confirming``)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.claim_ttl_seconds + RECHECK_MINUTES * 60
        if await self._confirm_until(firing, owner, give_up_at):
            return
        log.warning(
            "cron start sent; the store has not taken its confirmation yet, still trying",
            topology=firing.tv.name,
            minute=firing.minute.isoformat(),
        )
        task = background_task(self._confirm_later(firing, owner))
        self._confirming[firing.lease_name] = (task, firing, owner)

    async def _confirm_later(self, firing: Firing, owner: str) -> None:
        until = asyncio.get_running_loop().time() + (CATCH_UP_MINUTES + RECHECK_MINUTES) * 60
        try:
            if not await self._confirm_until(firing, owner, until, log_failure=True):
                return
            log.info("cron start confirmed late", topology=firing.tv.name, minute=firing.minute.isoformat())
        finally:
            self._confirming.pop(firing.lease_name, None)

    async def _confirm_until(self, firing: Firing, owner: str, give_up_at: float, *, log_failure: bool = False) -> bool:
        """Retry the confirmation with backoff until ``give_up_at``; whether the store took it."""
        loop = asyncio.get_running_loop()
        for delay in backoff_delays(CONFIRM_RETRY_FIRST_SECONDS, CONFIRM_RETRY_MAX_SECONDS):
            try:
                await self._set_leases(firing, owner, LEASE_TTL_SECONDS)
                return True
            except Exception as exc:
                if loop.time() + delay >= give_up_at:
                    if log_failure:
                        _unconfirmed(firing, exc, "its claim could not be confirmed")
                    return False
            await asyncio.sleep(delay)
        return False  # pragma: no cover - backoff_delays never ends

    async def _claim(self, firing: Firing, owner: str) -> bool:
        store = self.rt.store
        if not await store.acquire_lease(firing.lease_name, owner, self.claim_ttl_seconds):
            return False
        if not await store.acquire_lease(firing.legacy_lease_name, owner, self.claim_ttl_seconds):
            await store.release_lease(firing.lease_name, owner)  # an older worker fired it
            return False
        return True

    async def _set_leases(self, firing: Firing, owner: str, ttl: float | None) -> None:
        """Hold both of the firing's leases for ``ttl`` seconds, or let them go (None)."""
        for name in firing.lease_names:
            if ttl is None:
                await self.rt.store.release_lease(name, owner)
            else:
                await self.rt.store.acquire_lease(name, owner, ttl)

    async def _stopped_while_sending(self, sending: asyncio.Future[Any], firing: Firing, owner: str) -> None:
        """Stopped (the worker goes down) with the start on its way. Sent or still on its way (the
        producer flushes at stop), the minute stays claimed rather than fire again; failed, it is
        given back (held for a day, a start that never went out was lost)."""
        done, _ = await asyncio.wait({sending}, timeout=self.start_timeout_seconds)
        failed = bool(done) and (sending.cancelled() or sending.exception() is not None)
        try:
            await self._set_leases(firing, owner, None if failed else LEASE_TTL_SECONDS)
        except Exception as exc:  # the claim expires by itself
            log.warning("cron claim not settled at a stop", minute=firing.minute.isoformat(), error=repr(exc))

    async def _outcome(self, sending: asyncio.Future[Any], firing: Firing, owner: str) -> None:
        """Wait for the start's acknowledgement, keeping the claim while the broker is slow.

        Given up after a timeout, the start was still in the producer's batch and went out all the
        same, while the claim was let go and a re-check fired the minute again: twice. The producer
        acknowledges or fails every record in the end; until it does, the claim is renewed."""

        async def keep_claim() -> None:
            log.warning(
                "cron start not acknowledged yet; waiting", topology=firing.tv.name, minute=firing.minute.isoformat()
            )
            await self._set_leases(firing, owner, self.claim_ttl_seconds)

        await wait_renewing(sending, self.start_timeout_seconds, keep_claim)
        sending.result()  # raises what the broker answered

    # the loop -----------------------------------------------------------------------------------
    def ticked(self, now: datetime) -> None:
        """The loop covered every minute up to ``now``'s, but for minutes whose firing failed: the
        next loops catch up from the oldest of them (up to CATCH_UP_MINUTES back). Re-checked only
        for RECHECK_MINUTES, a start that failed through a longer broker or store outage was lost,
        and a daily import skipped its day."""
        current = minute_of(now)
        failed = min(self._failed_minutes, default=None)
        self._failed_minutes.clear()
        if failed is None:
            self._last_minute = current
        else:
            self._last_minute = max(failed - timedelta(minutes=1), current - timedelta(minutes=CATCH_UP_MINUTES))

    def minutes_to_fire(self, now: datetime) -> tuple[list[datetime], list[datetime]]:
        """(missed, recent), oldest first: minutes no tick of this scheduler covered (since it
        started, or stalled: up to CATCH_UP_MINUTES back), and the last RECHECK_MINUTES with the
        current one, which every loop ticks."""
        current = minute_of(now)
        recent = [current - timedelta(minutes=k) for k in range(RECHECK_MINUTES, -1, -1)]
        if self._last_minute is None:
            back = CATCH_UP_MINUTES
        else:
            back = min(int((current - self._last_minute) / timedelta(minutes=1)) - 1, CATCH_UP_MINUTES)
        missed = [current - timedelta(minutes=k) for k in range(back, RECHECK_MINUTES, -1)]
        return missed, recent

    async def run(self) -> None:
        """Tick at every minute boundary until cancelled; a failing tick is logged, never fatal."""
        while True:
            now = datetime.now(UTC)
            missed, recent = self.minutes_to_fire(now)
            *rechecked, current = recent
            if missed:
                # the re-checked minutes are missed ones too: ticked on their own, a start fired
                # for the latest missed tick and again for each of them
                try:
                    await self.catch_up(missed + rechecked)
                except Exception:
                    log.exception("missed cron ticks failed", first=missed[0].isoformat())
                    self._failed_minutes.add(missed[0])
                rechecked = []
            for minute in [*rechecked, current]:
                try:
                    await self.tick(minute, past=minute != current)
                except Exception:  # the store away (installs not listed): caught up once it answers
                    log.exception("cron tick failed", minute=minute.isoformat())
                    self._failed_minutes.add(minute)
            self.ticked(now)
            await self.purge_leases()
            now = datetime.now(UTC)
            next_minute = minute_of(now) + timedelta(minutes=1)
            await asyncio.sleep(max(0.0, (next_minute - now).total_seconds()) + 0.01)

    async def purge_leases(self) -> None:
        """Every ``PURGE_INTERVAL_SECONDS``: every worker does it, and deleting twice is harmless."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        try:
            purged = await self.rt.store.purge_expired_leases()
        except Exception:
            log.exception("purging expired leases failed")
            return
        if purged:
            log.info("expired leases purged", count=purged)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"scheduler:{self.owner_id}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._confirming:
            pending = list(self._confirming.values())
            await cancel_and_wait(*(task for task, _, _ in pending))
            # once more each (the store may be back; left to expire, another worker's catch-up
            # fires them again), all at once and bounded as a whole: a hung store must not hold
            # up the stop
            tries = [
                asyncio.ensure_future(self._set_leases(firing, owner, LEASE_TTL_SECONDS))
                for _, firing, owner in pending
            ]
            done, not_done = await asyncio.wait(tries, timeout=STOP_CONFIRM_SECONDS)
            await cancel_and_wait(*not_done)
            unconfirmed = len(not_done) + sum(1 for t in done if t.exception() is not None)
            if unconfirmed:
                log.warning("cron starts sent but not confirmed at a stop", count=unconfirmed)


def _unconfirmed(firing: Firing, error: Exception, why: str) -> None:
    """A sent firing's claim left to expire: another worker may fire its minute again."""
    log.warning(
        f"cron start sent; {why}, so it expires by itself",
        topology=firing.tv.name,
        minute=firing.minute.isoformat(),
        error=f"{type(error).__name__}: {error}",
    )
