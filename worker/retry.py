"""The delayed retry path: a retry topic whose records go back to their node topic when due.

A failing record does not block its partition: the node publishes it here and moves on. This
consumer holds each record until its due time (many at once), forwards it, and only then lets its
offset be committed, so a crash while waiting re-reads the record instead of losing it.

A record is held for ``HOLD_SECONDS`` at most: one due later goes back to the end of the retry topic
then, unchanged, and waits there. The committed offset cannot pass a record still held, so holding
one retry for its whole backoff (up to ten minutes) kept every retry read after it uncommitted, and
a restart or rebalance forwarded all of those again: a stock movement retried once was applied
twice. It also kept the consumer from fetching for longer than Kafka allows between polls.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from worker.envelope import H
from worker.kafka import PartitionLists
from worker.logging import bind_message
from worker.processes import HandledTally
from worker.record_batches import OUTPUT_TOPIC_WAIT_SECONDS
from worker.runtime import Runtime
from worker.trash import record_entry, record_headers

log = structlog.get_logger("retry")

#: The longest a record is held before it goes back to the end of the retry topic.
HOLD_SECONDS = 30.0
#: How long a retry waits for a target topic the broker cannot name, as a node's output does.
TARGET_TOPIC_WAIT_SECONDS = OUTPUT_TOPIC_WAIT_SECONDS


class RetryForwarder:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._targets = PartitionLists(runtime.producer, give_up_after=TARGET_TOPIC_WAIT_SECONDS)

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        headers = record_headers(record)
        bind_message(  # this runner's lines name the message it forwards (and nothing of the last one)
            correlation_id=headers.get(H.CORRELATION_ID),
            process_id=headers.get(H.PROCESS_ID),
            node=headers.get(H.NODE_ID),
            user=headers.get(H.USER),
        )
        target = headers.get(H.RETRY_TARGET_TOPIC)
        try:
            due = float(headers.get(H.RETRY_DUE_AT, "0"))
        except ValueError:
            due = 0.0
        if not target:
            await self._trash(record, "MalformedMessage", "retry record without a target topic")
            return
        wait = due - time.time()
        if wait > HOLD_SECONDS:
            await asyncio.sleep(HOLD_SECONDS)
            await self._send(record.topic, record, list(record.headers or ()))  # back in line, unchanged
            return
        await asyncio.sleep(max(0.0, wait))
        try:
            await self._targets.of(target)
        except KafkaError as exc:
            # a topic that stays missing (its node type retired and the topic deleted, an ACL):
            # retried for ever, the record held its partition's commits, and every retry read after
            # it was forwarded again at each restart
            reason = f"retry target topic {target!r} is not available: {str(exc) or type(exc).__name__}"
            await self._trash(record, type(exc).__name__, reason)
            return
        headers.pop(H.RETRY_TARGET_TOPIC, None)
        headers.pop(H.RETRY_DUE_AT, None)
        await self._send(target, record, [(k, v.encode()) for k, v in headers.items()])
        log.debug("retried", topic=target, hop=headers.get(H.REPEAT_HOPS))

    async def _send(self, topic: str, record: ConsumerRecord[bytes, bytes], headers: list[tuple[str, bytes]]) -> None:
        """The record's key and value to ``topic``; returns once the broker has it.

        A rebalance or a stop cancels the records still waiting for their due time (see
        ``abandon_on_revoke``); one already queued here goes to the broker whatever this task does,
        so it is seen through and counted as forwarded. Abandoned instead, it stayed uncommitted,
        and the partition's next owner forwarded it again: the node ran twice.
        """
        ack = await self.rt.producer.send(topic, record.value, key=record.key, headers=headers)
        try:
            await asyncio.shield(ack)
        except asyncio.CancelledError:
            await ack  # the broker's answer is near (the producer's request timeout bounds it)

    async def _trash(self, record: ConsumerRecord[bytes, bytes], error_class: str, reason: str) -> None:
        entry = record_entry(record, error_class=error_class, error_message=reason)
        entry_id = await self.rt.store.add_trash(entry)
        log.warning("retry record moved to trash", trash_id=entry_id, reason=reason)
        if self.rt.metrics is not None:  # as a node's trash: an alert on the counter sees it too
            self.rt.metrics.trashed("retry")
        tally = HandledTally.trashed_unread(entry.headers)  # counted in flight when it was scheduled
        if tally is not None:
            # shielded: the batch's future is every record's in it, and a rebalance cancels this one
            await asyncio.shield(self.rt.ledger.add(tally))
