"""Node outputs appended to one open Kafka record batch per partition and sent batch by batch.

``AIOKafkaProducer.send`` costs, per record, a metadata wait, a partitioner call, a copy into the
accumulator and a future: about a fifth of a pass-through hop. Outputs instead go straight into an
aiokafka ``BatchBuilder`` for their partition (``create_batch`` / ``send_batch``, aiokafka's public
batch API), and every record of a batch shares the batch's acknowledgement, which is what the ledger
batch waits for anyway (:mod:`worker.ledger`).

Per partition, one batch fills while the one before it is with the broker, and one task hands them
over in the order they were opened, so the records of a key keep their order. A batch the broker
did not take fails every record's future; the caller sends those records again (at-least-once).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.errors import OutputTooLarge
from worker.kafka import MAX_RECORD_BYTES, PartitionLists, partition_for_key
from worker.tasks import background_task

#: How long the first record of a batch waits for others before the batch goes out.
LINGER_SECONDS = 0.002

Headers = list[tuple[str, bytes]]

#: Room for a record's key and headers: below the limit by this much, a value is not measured.
HEADERS_ALLOWANCE_BYTES = 64 << 10

#: How long an output waits for a topic the producer has never known (see ``PartitionLists.of``).
OUTPUT_TOPIC_WAIT_SECONDS = 600.0


@dataclass(slots=True)
class _Batch:
    builder: BatchBuilder
    acknowledged: asyncio.Future[None]


class RecordBatcher:
    def __init__(
        self, producer: AIOKafkaProducer, *, linger: float = LINGER_SECONDS, max_record_bytes: int = MAX_RECORD_BYTES
    ) -> None:
        self.producer = producer
        self.linger = linger
        self.max_record_bytes = max_record_bytes
        #: Per partition, batches not handed to the producer yet, oldest first; the last one fills.
        self._batches: dict[tuple[str, int], deque[_Batch]] = {}
        #: One task per partition with batches to hand over; it ends when none is left.
        self._senders: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._partitions = PartitionLists(producer, give_up_after=OUTPUT_TOPIC_WAIT_SECONDS)

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers, *, measure_whole: bool = False
    ) -> asyncio.Future[None]:
        """Append one record; the future resolves when the broker has acknowledged its batch.

        Raises :class:`OutputTooLarge` for a record over ``max_record_bytes`` (``send`` checks that
        itself; ``create_batch`` does not, and an empty batch takes any record). The record is
        measured when its value is near the limit, or always with ``measure_whole`` (one whose
        headers may be large)."""
        if measure_whole or len(value) > self.max_record_bytes - HEADERS_ALLOWANCE_BYTES:
            self._check_size(topic, value, key, headers)
        partitions = await self._partitions.of(topic)
        tp = (topic, partition_for_key(key, partitions, partitions))
        queued = self._batches.get(tp)
        if queued:
            batch = queued[-1]
            if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is not None:
                return batch.acknowledged
        batch = self._new_batch(tp)
        # an empty batch takes any record (one too big for the broker fails there, as with send);
        # checked all the same, because a refusal ignored here would lose the record silently
        if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            raise RuntimeError(f"an empty record batch for {topic} refused a record")
        return batch.acknowledged

    def _check_size(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> None:
        """Raise :class:`OutputTooLarge` for a record the broker would refuse."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self.max_record_bytes:
            raise OutputTooLarge(f"an output to {topic} is {size} bytes; the broker takes {self.max_record_bytes}")

    def _new_batch(self, tp: tuple[str, int]) -> _Batch:
        loop = asyncio.get_running_loop()
        batch = _Batch(self.producer.create_batch(), loop.create_future())
        self._batches.setdefault(tp, deque()).append(batch)
        if tp not in self._senders:
            self._senders[tp] = background_task(self._hand_over(tp), name=f"batches:{tp[0]}[{tp[1]}]")
        return batch

    async def _hand_over(self, tp: tuple[str, int]) -> None:
        try:
            await asyncio.sleep(self.linger)
            queued = self._batches[tp]
            while queued:
                await self._send_batch(tp, queued.popleft())
        finally:
            del self._senders[tp]
            # empty unless cancelled (the loop is going away): fail what is left, the callers resend
            for batch in self._batches.pop(tp, ()):
                _settle(batch.acknowledged, ProducerClosed())

    async def _send_batch(self, tp: tuple[str, int], batch: _Batch) -> None:
        try:
            # waits while the partition's previous batch is still with the broker
            acknowledged = await self.producer.send_batch(batch.builder, tp[0], partition=tp[1])
        except Exception as exc:
            _settle(batch.acknowledged, exc)
            return
        acknowledged.add_done_callback(partial(_relay, batch.acknowledged))

    async def close(self, timeout: float = 10.0) -> None:
        """Hand over every open batch and wait until the producer has them (on shutdown)."""
        if self._senders:
            await asyncio.wait(set(self._senders.values()), timeout=timeout)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _relay(future: asyncio.Future[None], acknowledged: asyncio.Future[Any]) -> None:
    """The producer's answer for a batch, passed on to the records' shared future."""
    _settle(future, ProducerClosed() if acknowledged.cancelled() else acknowledged.exception())
