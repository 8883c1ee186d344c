"""Writes "message handled" records to the process ledger in batches, and settles each batch.

A handled message's offset may be committed only when the broker has its outputs and its count in
the ledger (the count is what lets the tracker see when a process is finished). One Kafka record
per handled message doubled the records a hop writes, and one future per message was a good part
of a hop's cost. Instead, handlers add their count and their outputs' acknowledgements to the open
batch and get the batch's future, one for all of them: within ``linger`` seconds the batch goes out
as one record per ledger partition, summed per process, and the future resolves once the broker
has acknowledged those records and every output of the batch. What the broker did not take is sent
again (with backoff) until it is; the future never fails.

A process's records must stay in one partition (the tracker that owns the partition sees its whole
story), so the partition is chosen here from the root process id with the producer's own
partitioner (:func:`worker.kafka.partition_for_key`), as for the start records keyed by that id.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from worker.envelope import encode_json
from worker.kafka import PartitionLists, Send, partition_for_key, resend_until_acknowledged, send_all, unacknowledged
from worker.processes import HandledTally, handled_record
from worker.router import Outgoing
from worker.tasks import background_task

log = structlog.get_logger("ledger")

#: How long a batch stays open for more handlers before it is sent.
LINGER_SECONDS = 0.003


@dataclass
class _Batch:
    """The open batch: tallies per process, and the one future every handler in it waits on."""

    acknowledged: asyncio.Future[None]
    tallies: dict[str, HandledTally] = field(default_factory=dict)
    #: Outputs of the batch's messages, already on their way, with their acknowledgements.
    outputs: list[tuple[Outgoing, asyncio.Future[Any]]] = field(default_factory=list)


class LedgerWriter:
    def __init__(
        self, producer: AIOKafkaProducer, topic: str, send_output: Send[Outgoing], *, linger: float = LINGER_SECONDS
    ) -> None:
        self.producer = producer
        self.topic = topic
        #: Sends an output again when the broker did not acknowledge it.
        self.send_output = send_output
        self.linger = linger
        self._open: _Batch | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._partitions = PartitionLists(producer)

    def add(
        self, tally: HandledTally, outputs: Iterable[tuple[Outgoing, asyncio.Future[Any]]] = ()
    ) -> asyncio.Future[None]:
        """Count ``tally`` in the next batch; the future resolves when the broker has it and
        ``outputs`` (sent already, with their acknowledgements).

        The writer takes ``tally`` over (it may add later tallies of the same process to it).
        """
        batch = self._open
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._open = _Batch(loop.create_future())
            # in no message's context: the batch is every message's (see ``background_task``)
            self._timer = loop.call_later(self.linger, self._send_open, context=contextvars.Context())
        known = batch.tallies.get(tally.root)
        if known is None:
            batch.tallies[tally.root] = tally
        else:
            known.merge(tally)
        batch.outputs.extend(outputs)
        return batch.acknowledged

    def _send_open(self) -> None:
        self._timer = None
        batch, self._open = self._open, None
        if batch is None:
            return
        task = background_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch) -> None:
        partitions = await self._partitions.of(self.topic)
        by_partition: dict[int, list[HandledTally]] = {}
        for tally in batch.tallies.values():
            partition = partition_for_key(tally.root.encode(), partitions, partitions)
            by_partition.setdefault(partition, []).append(tally)
        values = [(partition, encode_json(handled_record(tallies))) for partition, tallies in by_partition.items()]
        counted = await send_all(values, self._send_one)
        failed_outputs = await unacknowledged(batch.outputs)
        await resend_until_acknowledged(failed_outputs, self.send_output, what="outputs")
        failed = await unacknowledged(counted)
        await resend_until_acknowledged(failed, self._send_one, what="ledger records")
        if not batch.acknowledged.done():
            batch.acknowledged.set_result(None)

    async def _send_one(self, item: tuple[int, bytes]) -> asyncio.Future[Any]:
        partition, value = item
        return await self.producer.send(self.topic, value, partition=partition)

    async def close(self, timeout: float = 10.0) -> None:
        """Send what is open and wait for it (on shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._send_open()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)
