"""One Kafka consumer group member that runs many records at once and commits safely.

Used for every node topic, the retry topic and inbound topics. Records are handled concurrently
(up to ``concurrency``), one at a time per key when ``ordered``; the committed offset of a
partition never passes a record that is still in flight (see :mod:`worker.offsets`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord

from worker.offsets import PartitionOffsets

log = structlog.get_logger("consumer")

Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]
COMMIT_INTERVAL_SECONDS = 0.5
COMMIT_TIMEOUT_SECONDS = 10.0


@dataclass(slots=True)
class _KeySlot:
    """The per-key semaphore and how many records use it, so idle keys are forgotten."""

    semaphore: asyncio.Semaphore
    users: int = 0


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: ManagedConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.owner._drain_and_commit()
        for tp in revoked:
            self.owner._offsets.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.owner.assigned.set()
        log.info("partitions assigned", name=self.owner.name, partitions=len(assigned))


class ManagedConsumer:
    def __init__(
        self,
        name: str,
        consumer: AIOKafkaConsumer,
        topics: list[str],
        handler: Handler,
        *,
        concurrency: int = 10,
        ordered: bool = False,
        max_in_flight: int = 1000,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.topics = topics
        self.handler = handler
        #: Per key (install): ``concurrency`` records at once, 1 when ordered. Limiting per key, not
        #: per consumer, means one e-shop waiting for its token's slots never holds up another's.
        self.per_key = 1 if ordered else concurrency
        self.ordered = ordered
        self.assigned = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._key_slots: dict[bytes, _KeySlot] = {}
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Tasks inside the handler (holding their key's slot), as opposed to queued behind it.
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        self._loop_task = asyncio.create_task(self._run(), name=f"consume:{self.name}")
        self._commit_task = asyncio.create_task(self._commit_loop(), name=f"commit:{self.name}")

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
            for tp, records in batches.items():
                for record in records:
                    await self._slots.acquire()
                    if self._stopping:
                        self._slots.release()
                        return
                    self._offsets.setdefault(tp, PartitionOffsets()).started(record.offset)
                    self._spawn(tp, record)

    def _spawn(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        key = record.key or b""
        key_slot = self._key_slots.get(key)
        if key_slot is None:
            key_slot = self._key_slots[key] = _KeySlot(asyncio.Semaphore(self.per_key))
        key_slot.users += 1
        task = asyncio.create_task(self._handle(tp, record, key, key_slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], key: bytes, key_slot: _KeySlot
    ) -> None:
        # Semaphores wake waiters in FIFO order, so records of one key start in offset order: with
        # per_key == 1 (ordered nodes) they also finish in order.
        task = asyncio.current_task()
        try:
            async with key_slot.semaphore:
                if task is not None:
                    self._running.add(task)
                await self.handler(record)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The handler promises not to raise; if it does anyway, the offset stays uncommitted
            # and the record comes back after a restart instead of being skipped.
            log.exception("handler failed; record left uncommitted", name=self.name, offset=record.offset)
            return
        finally:
            if task is not None:
                self._running.discard(task)
            self._slots.release()
            key_slot.users -= 1
            if key_slot.users == 0:
                self._key_slots.pop(key, None)
        offsets = self._offsets.get(tp)
        if offsets is not None:
            offsets.finished(record.offset)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_SECONDS)
            await self.commit()

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
            # back empty); the next round retries with fresh positions instead of hanging here
            await asyncio.wait_for(self.consumer.commit(dict(to_commit)), COMMIT_TIMEOUT_SECONDS)
        except (CommitFailedError, KafkaError, TimeoutError) as exc:
            log.warning("commit failed; will retry", name=self.name, error=str(exc) or type(exc).__name__)
            return
        for tp, position in to_commit.items():
            self._offsets[tp].committed = position

    async def _drain_and_commit(self, wait_seconds: float | None = None) -> None:
        """Let running records finish, give queued ones back (uncommitted, so they are read again)."""
        for task in self._tasks - self._running:
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=wait_seconds)
        await self.commit()

    async def stop(self, graceful_timeout: float = 30.0) -> None:
        """Stop fetching, let in-flight records finish (up to the timeout), commit, leave the group."""
        self._stopping = True
        for task in (self._loop_task, self._commit_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await self._drain_and_commit(graceful_timeout)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.consumer.stop()

    def lag(self) -> dict[str, Any]:
        """Per partition: the highest offset seen minus the committed one (cheap, local)."""
        return {
            f"{tp.topic}[{tp.partition}]": o.highest_seen + 1 - max(o.committed, 0) for tp, o in self._offsets.items()
        }
