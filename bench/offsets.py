"""Counting the records of a topic while measuring.

By consuming them: the embedded broker (Tansu 0.6) reports end offsets that do not follow the record
count when a producer sends multi-record batches (a batch of 667 records can move the end offset by
one), so ``end_offsets`` cannot tell how many messages arrived.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.tasks import cancel_and_wait


class RecordCounter:
    """``await RecordCounter.open(bootstrap, topic)``, then ``wait_for(n)``; counts without decoding."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.count = 0
        self.last_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, bootstrap: str, topic: str) -> RecordCounter:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        counter = cls(consumer)
        counter._task = asyncio.create_task(counter._run(), name=f"count:{topic}")
        return counter

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=10_000)
            n = sum(len(records) for records in batches.values())
            if n:
                self.count += n
                self.last_at = time.perf_counter()

    async def wait_for(
        self, expected: int, timeout: float, started: float, *, poll: float = 0.02, what: str = "records"
    ) -> int:
        """Wait until ``expected`` records arrived; print progress every 15 s."""
        last_report = started
        while self.count < expected:
            now = time.perf_counter()
            if self._task is not None and self._task.done():
                self._task.result()  # raises what stopped the counter
            if now - started > timeout:
                raise TimeoutError(f"{self.count} of {expected} {what} after {timeout:.0f}s")
            if now - last_report > 15:
                last_report = now
                print(f"  ... {self.count}/{expected} {what} after {now - started:.0f}s", flush=True)
            await asyncio.sleep(poll)
        return self.count

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        await self.consumer.stop()
