"""One Kafka consumer group member that runs many records at once and commits safely.

Used for every node topic, the retry topic and inbound topics. Records are handled concurrently
(up to ``concurrency``), one at a time per key when ``ordered``; the committed offset of a
partition never passes a record that is still in flight (see :mod:`worker.offsets`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord

from worker.offsets import PartitionOffsets
from worker.settings import Settings
from worker.tasks import backoff_delays, cancel_and_wait

log = structlog.get_logger("consumer")

#: Handles one record. It returns when the record no longer needs the handler's attention, with
#: ``None`` if its fate is already recorded, or a future that is done once it is (outputs still on
#: their way to the broker). The record's offset is committable only after that.
Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable["asyncio.Future[None] | None"]]
COMMIT_INTERVAL_SECONDS = 0.5
COMMIT_TIMEOUT_SECONDS = 10.0
#: How often the broker is asked for the partitions' ends and committed offsets (see ``lag``).
LAG_REFRESH_SECONDS = 10.0
#: Read-ahead bounds of a consumer built without the worker's settings (tests): the settings'
#: defaults. Records: at ten e-shops x 10,000 orders, 10,000 left tokens idle behind other shops'
#: backlogs (0.57 of the limit; 50,000: 0.73).
DEFAULT_MAX_IN_FLIGHT: int = Settings.model_fields["consumer_read_ahead_records"].default
DEFAULT_READ_AHEAD_BYTES: int = Settings.model_fields["consumer_read_ahead_bytes"].default
#: What a read record costs besides its key and value: the ConsumerRecord, its dozen header tuples
#: (about 0.5 KiB of text) and the queue entry, so that the byte budget bounds memory, not payload.
RECORD_OVERHEAD_BYTES = 2048
#: A runner whose node never waits gives the event loop a turn after this many records.
YIELD_EVERY = 32
#: How long a revocation waits for running records before it lets the rebalance go on, in a
#: consumer built without the worker's settings (tests); see :func:`revoke_wait_seconds`.
REVOKE_WAIT_SECONDS = 4.0
#: What a revocation leaves of the group's rebalance timeout for the rejoin itself.
REJOIN_MARGIN_SECONDS = 5.0
#: Backoff of a record whose handler raised (see ``ManagedConsumer._handle``); short at most,
#: because a sleeping record notices a revocation only when it wakes.
HANDLER_RETRY_FIRST_SECONDS = 0.5
HANDLER_RETRY_MAX_SECONDS = 5.0


class RecordAbandoned(Exception):
    """A record given up without a fate (rebalance or stop): left uncommitted, so it is read again.

    A handler raises it for a record it stopped waiting on because its partition moved (see
    ``ManagedConsumer.generation``); the consumer raises it itself for one whose retries outlived
    the partition."""


class ReadAheadBudget:
    """The bytes all consumers of one process may hold read ahead, together.

    Per consumer, twenty-odd node types under a backlog could each fill their own allowance; shared,
    memory has one bound (``Settings.consumer_read_ahead_bytes``). Half of it is shared: any consumer
    reads ahead while it lasts, so the busy ones use what the idle ones do not. The other half is
    split evenly between the consumers as a reserve: one holding less than its share reads on even
    when the shared half is spent. Wholly shared, one node type's backlog behind one slow shop (26,000
    order details) took all of it, and every other node type of the process, the retry forwarder
    and the inbound bridge read nothing for as long as the backlog lasted. A consumer waits only while
    both are spent for it, and what it holds is freed as its records finish (nothing it holds waits
    on another consumer), so it cannot deadlock.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        #: Consumers sharing the budget (each joins when it starts and leaves when it stops).
        self.consumers = 0
        self._room = asyncio.Event()

    @property
    def spent(self) -> bool:
        """The shared half is spent: from now on only consumers within their reserve read ahead."""
        return self.held >= self.max_bytes // 2

    def reserve(self) -> int:
        """Each consumer's share of the other half."""
        return self.max_bytes // 2 // max(1, self.consumers)

    def full_for(self, holding: int) -> bool:
        """Whether a consumer holding ``holding`` bytes must wait before it reads more."""
        return self.spent and holding >= self.reserve()

    def join(self) -> None:
        self.consumers += 1

    def leave(self) -> None:
        self.consumers = max(0, self.consumers - 1)
        self._room.set()  # the others' reserves grew

    def take(self, size: int) -> None:
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size
        self._room.set()

    async def wait(self) -> None:
        """Until some of the budget is given back (callers check ``full_for`` again)."""
        self._room.clear()
        await self._room.wait()


def revoke_wait_seconds(settings: Settings) -> float:
    """How long a revocation waits for the records still running: most of the rebalance timeout.

    A record still running when the wait ends is left uncommitted, and the partition's next owner
    (perhaps this member again) reads and runs it while the first run goes on: a write applied
    twice. The group waits for this member up to its rebalance timeout, so the wait may use most
    of it; past the timeout, the member would be dropped from the group, which is a rebalance more.
    """
    return max(1.0, settings.kafka_rebalance_timeout_ms / 1000 - REJOIN_MARGIN_SECONDS)


def record_cost(record: ConsumerRecord[bytes, bytes]) -> int:
    return max(record.serialized_value_size, 0) + max(record.serialized_key_size, 0) + RECORD_OVERHEAD_BYTES


@dataclass(slots=True)
class _KeyQueue:
    """Records of one key waiting their turn, and how many runners work through them."""

    #: Each with the offset tracker of its partition as it was when the record was read: one
    #: that finishes after its partition was revoked (and perhaps assigned again) must not touch
    #: the new tracker, where the same offset may be running again.
    records: deque[tuple[PartitionOffsets, ConsumerRecord[bytes, bytes]]] = field(default_factory=deque)
    runners: int = 0


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: ManagedConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # records fetched before this point may belong to partitions this member no longer owns;
        # whoever owns them next fetches them again from the committed offset
        self.owner.generation += 1
        if self.owner.abandon_on_revoke:
            for task in list(self.owner._tasks):
                # the waiting ones stay uncommitted: the partitions' next owner has them (a forward
                # under way is seen through: see ``RetryForwarder``)
                task.cancel()
        # bounded: the group waits for this member's rejoin only up to its rebalance timeout; past
        # it, this member is dropped and rejoins, which is a rebalance more. A record still running
        # is then left uncommitted for the next owner (see ``revoke_wait_seconds``).
        await self.owner._drain_and_commit(self.owner.revoke_wait)
        for tp in revoked:
            self.owner._offsets.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.owner.assigned.set()
        log.info("partitions assigned", name=self.owner.name, partitions=len(assigned))


class ManagedConsumer:
    """Fetches records into one FIFO queue per key; up to ``per_key`` runners drain each queue.

    Records are read ahead of the ones running (up to ``max_in_flight`` records, and while the
    process's shared ``budget`` has room), so that one e-shop with thousands of records ahead of
    another's in a partition does not leave the other's token idle. Queued records cost a deque
    entry, not a task.
    """

    def __init__(
        self,
        name: str,
        consumer: AIOKafkaConsumer,
        topics: list[str],
        handler: Handler,
        *,
        concurrency: int = 10,
        ordered: bool = False,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        budget: ReadAheadBudget | None = None,
        abandon_on_revoke: bool = False,
        revoke_wait: float | None = None,
        queue_key: Callable[[ConsumerRecord[bytes, bytes]], bytes] | None = None,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.topics = topics
        self.handler = handler
        #: Per key (install): ``concurrency`` records at once, 1 when ordered. Limiting per key, not
        #: per consumer, means one e-shop waiting for its token's slots never holds up another's.
        self.per_key = 1 if ordered else concurrency
        self.concurrency = concurrency
        self.ordered = ordered
        self.max_in_flight = max_in_flight
        #: On a revocation, cancel the running records instead of waiting for them: for the retry
        #: topic, whose records wait up to their due time (minutes). Waiting that long stalls the
        #: rebalance past the session timeout, and the next owner forwards them as well.
        self.abandon_on_revoke = abandon_on_revoke
        #: How long a revocation waits for the running records (see :func:`revoke_wait_seconds`).
        self.revoke_wait = REVOKE_WAIT_SECONDS if revoke_wait is None else revoke_wait
        #: What a record's queue (its order, its runners) is per: the record's key unless given.
        self.queue_key = queue_key
        # a consumer built on its own (tests) gets a budget of its own, as large as the default
        self.budget = budget or ReadAheadBudget(DEFAULT_READ_AHEAD_BYTES)
        self.assigned = asyncio.Event()
        #: Counts revocations: records fetched or taken up in an earlier generation are not handled.
        self.generation = 0
        #: ``start`` has subscribed: from then on a change of topics subscribes again.
        self._subscribed = False
        self._held = 0
        #: Bytes of the records held (as the shared budget counts them).
        self._held_bytes = 0
        #: Counted among the budget's consumers (from ``start`` to ``stop``).
        self._joined = False
        self._room = asyncio.Event()
        self._queues: dict[bytes, _KeyQueue] = {}
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        #: From the last ``refresh_lag``: each assigned partition's end, and the committed offset of
        #: those with nothing taken up yet.
        self._ends: dict[TopicPartition, int] = {}
        self._unread_committed: dict[TopicPartition, int] = {}
        #: Runner tasks, one per key and concurrency slot that has records to work on.
        self._tasks: set[asyncio.Task[None]] = set()
        #: Handled records whose outputs are still on their way to the broker.
        self._recording: set[asyncio.Future[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Why a loop of this consumer ended before its stop (None while both run).
        self.failure: str | None = None

    def configure(self, *, concurrency: int, ordered: bool) -> None:
        """New per-key limits (a deploy changed them): more runners start as records come, and
        runners past the new limit stop once their current record is done."""
        self.per_key = 1 if ordered else concurrency
        self.concurrency = concurrency
        self.ordered = ordered

    @property
    def in_flight(self) -> int:
        """Records read and not finished yet: running or queued behind their key."""
        return self._held

    async def start(self) -> None:
        if not self._joined:
            self.budget.join()
            self._joined = True
        try:
            await self.consumer.start()
        except BaseException:  # a start that failed counts for no reserve (a late one is tried again)
            self.budget.leave()
            self._joined = False
            raise
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))  # the topics as they are now
        self._subscribed = True
        self._loop_task = asyncio.create_task(self._run(), name=f"consume:{self.name}")
        self._commit_task = asyncio.create_task(self._commit_loop(), name=f"commit:{self.name}")
        self._lag_task = asyncio.create_task(self._lag_loop(), name=f"lag:{self.name}")
        for task in (self._loop_task, self._commit_task):
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A fetch or commit loop ends only at a stop; one that ended otherwise (an error no retry
        covers) reads or commits nothing more, which ``/healthz`` and ``up`` must know about."""
        if self._stopping or task.cancelled():
            return
        error = task.exception()
        self.failure = f"{task.get_name()} ended: {type(error).__name__ if error else 'returned'}: {error or ''}"
        log.error("consumer loop ended; nothing is read until the worker restarts", name=self.name, error=self.failure)

    def resubscribe(self, topics: list[str]) -> None:
        """Follow another set of topics (a deploy changed the inbound ones), keeping the rebalance
        listener: without it, aiokafka rebalances with no drain and no commit.

        Before ``start`` has subscribed (one deploy bringing several inbound topologies applies
        them one by one while the consumer starts), only the topics change: a subscribe while
        aiokafka's consumer was starting killed its fetcher, and the consumer read nothing, for good.
        """
        self.topics = topics
        if self._subscribed:
            self.consumer.subscribe(topics, listener=_Rebalance(self))

    async def wait_assigned(self) -> None:
        await self.assigned.wait()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                batches = await self.consumer.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                log.warning("fetch failed; retrying", name=self.name, error=str(exc))
                await asyncio.sleep(1)
                continue
            await self._take_up(batches)

    async def _take_up(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Queue a fetch's records, waiting for room as needed. When the consumer stops, or a
        rebalance comes while it waits, the rest of the fetch is dropped: it may be another member's
        now, and whoever owns it fetches it again from the committed offset."""
        generation = self.generation
        for tp, records in batches.items():
            for record in records:
                while self._held >= self.max_in_flight or self.budget.full_for(self._held_bytes):
                    if self._held >= self.max_in_flight:
                        self._room.clear()
                        await self._room.wait()
                    else:
                        await self.budget.wait()
                if self._stopping or self.generation != generation:
                    return
                offsets = self._offsets.get(tp)
                if offsets is None:  # not setdefault: that builds a PartitionOffsets per record
                    # the fetch began at the group's committed offset: until this member commits,
                    # the lag counted from -1, the whole partition, and a rebalance set off alerts
                    offsets = self._offsets[tp] = PartitionOffsets(committed=record.offset)
                offsets.started(record.offset)
                self._enqueue(offsets, record)

    def _enqueue(self, offsets: PartitionOffsets, record: ConsumerRecord[bytes, bytes]) -> None:
        self._held += 1
        cost = record_cost(record)
        self._held_bytes += cost
        self.budget.take(cost)
        key = self.queue_key(record) if self.queue_key is not None else record.key or b""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _KeyQueue()
        queue.records.append((offsets, record))
        if queue.runners < self.per_key:
            queue.runners += 1
            task = asyncio.create_task(self._drain(key, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _release(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self._held -= 1
        cost = record_cost(record)
        self._held_bytes -= cost
        self.budget.give(cost)
        self._room.set()

    def _give_back(self, queue: _KeyQueue) -> None:
        """Drop the queue's records unhandled: uncommitted, they are read again (restart, rebalance)."""
        for _, record in queue.records:
            self._release(record)
        queue.records.clear()

    def _finished(self, offsets: PartitionOffsets, record: ConsumerRecord[bytes, bytes]) -> None:
        offsets.finished(record.offset)
        self._release(record)

    def _recorded(
        self, offsets: PartitionOffsets, record: ConsumerRecord[bytes, bytes], recorded: asyncio.Future[None]
    ) -> None:
        self._recording.discard(recorded)
        if recorded.cancelled():
            self._release(record)  # left uncommitted: read again after a restart
        else:
            self._finished(offsets, record)

    async def _drain(self, key: bytes, queue: _KeyQueue) -> None:
        # One deque per key, popped from the left: records of a key start in offset order, and
        # with per_key == 1 (ordered nodes) they also finish in order.
        handled = 0
        try:
            while queue.records and queue.runners <= self.per_key:  # fewer after a deploy lowered it
                offsets, record = queue.records.popleft()
                try:
                    recorded = await self._handle(record)
                except RecordAbandoned:
                    self._release(record)  # uncommitted: its partition's next owner reads it again
                    continue
                except BaseException:
                    self._release(record)
                    raise
                if recorded is None or recorded.done():
                    self._finished(offsets, record)
                elif self.ordered:
                    # the key's next record waits: a resent output must not land after a later one;
                    # shielded, because the future is shared by a whole ledger batch and cancelling
                    # this runner (shutdown) must not cancel it for every other record in the batch
                    try:
                        await asyncio.shield(recorded)
                    except BaseException:
                        self._release(record)
                        raise
                    self._finished(offsets, record)
                else:
                    # the node takes the next record while these outputs are on their way
                    self._recording.add(recorded)
                    recorded.add_done_callback(partial(self._recorded, offsets, record))
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            queue.runners -= 1
            if queue.runners == 0 and self._queues.get(key) is queue:
                self._give_back(queue)  # records still queued behind a cancelled runner
                del self._queues[key]

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> asyncio.Future[None] | None:
        """The handler's answer for ``record``, trying again while it raises.

        The handler promises not to raise for a bad message (that goes to trash); when it raises all
        the same, something it needs is down (the store, the broker). Skipping the record would leave
        its offset in flight, and so the partition's commits stuck, until a restart; trying again
        with backoff goes on by itself once the outage ends. A rebalance or stop abandons the record.
        """
        generation = self.generation
        delays = backoff_delays(HANDLER_RETRY_FIRST_SECONDS, HANDLER_RETRY_MAX_SECONDS)
        while True:
            try:
                return await self.handler(record)
            except RecordAbandoned:
                raise
            except Exception:
                delay = next(delays)
                log.exception(
                    "handler failed; trying the record again", name=self.name, offset=record.offset, delay=delay
                )
            await asyncio.sleep(delay)
            if self._stopping or self.generation != generation:
                raise RecordAbandoned

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_SECONDS)
            try:
                await self.commit()
            except Exception:  # the loop is what moves the group's offsets: it must outlive one bad round
                log.exception("commit round failed", name=self.name)

    async def _lag_loop(self) -> None:
        """Apart from the commit loop: a slow answer (a rebalance under way) must not hold commits."""
        while True:
            try:
                await self.refresh_lag()
            except Exception as exc:  # the lag stays as it was: a metric, not a reason to stop
                log.warning("lag not refreshed", name=self.name, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(LAG_REFRESH_SECONDS)

    async def refresh_lag(self) -> None:
        """Ask the broker where each assigned partition ends, and where the group is in those this
        consumer has taken nothing of yet.

        What the fetches tell (the high watermark) stops moving while the read-ahead is full, since
        nothing is fetched then, and partitions not fetched yet were left out: the lag fell while the
        backlog grew, and a backlog on partitions not read yet showed as none."""
        assignment = list(self.consumer.assignment())
        if not assignment:
            self._ends, self._unread_committed = {}, {}
            return
        async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):
            ends = await self.consumer.end_offsets(assignment)
            unread = {}
            for tp in assignment:
                if tp not in self._offsets:
                    committed = await self.consumer.committed(tp)
                    unread[tp] = committed if committed is not None and committed >= 0 else 0
        self._ends, self._unread_committed = dict(ends), unread

    async def commit(self) -> None:
        to_commit: dict[TopicPartition, int] = {}
        assignment = self.consumer.assignment()
        for tp, offsets in list(self._offsets.items()):
            position = offsets.committable()
            if position is not None and tp in assignment:
                to_commit[tp] = position
        if not to_commit:
            return
        try:
            # bounded: aiokafka retries some errors forever (a partition gone after the broker came
            # back empty); the next round retries with fresh positions instead of hanging here.
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that comes as
            # the commit completes, and the commit loop a stop had cancelled went on, for good
            async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):
                await self.consumer.commit(dict(to_commit))
        except (CommitFailedError, KafkaError, TimeoutError) as exc:
            log.warning("commit failed; will retry", name=self.name, error=str(exc) or type(exc).__name__)
            return
        for tp, position in to_commit.items():
            known = self._offsets.get(tp)  # None: revoked while the commit was on its way
            if known is not None:
                known.committed = position

    async def _drain_and_commit(self, wait_seconds: float | None = None) -> None:
        """Let running records finish, give queued ones back (uncommitted, so they are read again)."""
        for queue in self._queues.values():
            self._give_back(queue)
        deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
        # runners first (they may hand over more outputs), then the outputs still on their way
        for waiting in (self._tasks, self._recording):
            if waiting:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                await asyncio.wait(set(waiting), timeout=left)
        await self.commit()

    async def stop(self, graceful_timeout: float = 30.0) -> None:
        """Stop fetching, let in-flight records finish (up to the timeout), commit, leave the group."""
        self._stopping = True
        self.generation += 1  # a handler waiting on its own (an in-place retry) gives its record up
        await cancel_and_wait(self._loop_task, self._commit_task, self._lag_task)
        if self.abandon_on_revoke:  # as on a revocation: the waiting ones end now, a forward under
            for task in list(self._tasks):  # way is seen through, and then committed below
                task.cancel()
        with contextlib.suppress(Exception):
            await self._drain_and_commit(graceful_timeout)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        if self._joined:
            self.budget.leave()
            self._joined = False

    def lag(self) -> dict[str, Any]:
        """Per partition: its end as the last fetch or ``refresh_lag`` saw it minus the committed
        offset (cheap, local). The highest offset fetched instead capped it at the read-ahead, and a
        backlog of millions showed as 50,000."""
        lags = {}
        assigned = self.consumer.assignment()
        for tp, o in self._offsets.items():
            # aiokafka asserts the partition is assigned (a resubscribe may have taken it away)
            highwater = self.consumer.highwater(tp) if tp in assigned else None
            end = max(highwater or 0, o.highest_seen + 1, self._ends.get(tp, 0) if tp in assigned else 0)
            lags[f"{tp.topic}[{tp.partition}]"] = end - max(o.committed, 0)
        for tp, committed in self._unread_committed.items():  # assigned, nothing taken up yet
            if tp in assigned and tp not in self._offsets:
                lags[f"{tp.topic}[{tp.partition}]"] = max(0, self._ends.get(tp, 0) - committed)
        return lags
