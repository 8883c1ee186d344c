"""Writes "message handled" records to the process ledger in batches.

Every handled message must reach the ledger before its offset is committed (that is what lets the
tracker see when a process is finished), but one Kafka record per handled message doubled the
records a hop writes. Instead, handlers add their counts to the open batch and get a future:
within ``linger`` seconds the batch goes out as one record per ledger partition, summed per
process, and the futures resolve once the broker has acknowledged every one of those records. A
record the broker did not take is sent again (with backoff) until it is; the futures never fail.

A process's records must stay in one partition (the tracker that owns the partition sees its whole
story), so the partition is chosen here from the root process id with the producer's own
partitioner (:func:`worker.kafka.partition_for_key`), as for the start records keyed by that id.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from worker.envelope import encode_json
from worker.kafka import partition_for_key, resend_until_acknowledged, send_all, unacknowledged
from worker.processes import HandledTally

#: How long a batch stays open for more handlers before it is sent.
LINGER_SECONDS = 0.003
#: How long the topic's partition count is trusted before it is looked up again.
PARTITIONS_TTL_SECONDS = 30.0


@dataclass
class _Batch:
    """The open batch: tallies per process and one future per handler waiting for it."""

    tallies: dict[str, HandledTally] = field(default_factory=dict)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class LedgerWriter:
    def __init__(self, producer: AIOKafkaProducer, topic: str, *, linger: float = LINGER_SECONDS) -> None:
        self.producer = producer
        self.topic = topic
        self.linger = linger
        self._open: _Batch | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._partitions: list[int] = []
        self._partitions_at = 0.0

    def add(self, tally: HandledTally) -> asyncio.Future[None]:
        """Count ``tally`` in the next batch; the future resolves when the broker has it.

        The writer takes ``tally`` over (it may add later tallies of the same process to it).
        """
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            self._timer = loop.call_later(self.linger, self._send_open)
        known = batch.tallies.get(tally.root)
        if known is None:
            batch.tallies[tally.root] = tally
        else:
            known.merge(tally)
        waiter = loop.create_future()
        batch.waiters.append(waiter)
        return waiter

    def _send_open(self) -> None:
        self._timer = None
        batch, self._open = self._open, None
        if batch is None:
            return
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch) -> None:
        partitions = await self._partition_list()
        records: dict[int, list[dict[str, object]]] = {}
        for tally in batch.tallies.values():
            partition = partition_for_key(tally.root.encode(), partitions, partitions)
            records.setdefault(partition, []).append(tally.record())
        values = [(partition, encode_json(batch_records)) for partition, batch_records in records.items()]
        failed = await unacknowledged(await send_all(values, self._send_one))
        await resend_until_acknowledged(failed, self._send_one, what="ledger records")
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _send_one(self, item: tuple[int, bytes]) -> asyncio.Future[Any]:
        partition, value = item
        return await self.producer.send(self.topic, value, partition=partition)

    async def _partition_list(self) -> list[int]:
        now = time.monotonic()
        if not self._partitions or now - self._partitions_at > PARTITIONS_TTL_SECONDS:
            found = await self.producer.partitions_for(self.topic)
            self._partitions, self._partitions_at = sorted(found), now
        return self._partitions

    async def close(self, timeout: float = 10.0) -> None:
        """Send what is open and wait for it (on shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._send_open()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)
