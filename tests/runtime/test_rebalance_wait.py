"""A rebalance waits for the records a member is running, on a real broker.

A member that joins (a worker scaled up) or leaves makes every member give up its partitions. A
record still running then was left uncommitted after 4 s, and the partition's next owner ran it
again while the first run went on: for a stock movement, the stock moved twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from aiokafka.structs import ConsumerRecord

from tests.simulator.helpers import eventually
from worker.consumer import ManagedConsumer, revoke_wait_seconds
from worker.kafka import ensure_topics, make_consumer, make_producer
from worker.settings import Settings

#: Longer than the wait before the fix, far shorter than the default rebalance timeout.
SLOW_SECONDS = 6.0


async def test_a_record_running_through_a_rebalance_runs_once(worker_settings: Settings) -> None:
    assert revoke_wait_seconds(worker_settings) > SLOW_SECONDS
    bootstrap = worker_settings.kafka_bootstrap_servers
    topic = f"{worker_settings.kafka_topic_prefix}.node.slow-writer"
    group = f"{worker_settings.kafka_topic_prefix}.slow-writer"
    await ensure_topics(worker_settings, bootstrap, [topic])
    runs: Counter[bytes] = Counter()
    slow_started = asyncio.Event()

    async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
        runs[record.value or b""] += 1
        if record.value == b"slow":
            slow_started.set()
            await asyncio.sleep(SLOW_SECONDS)

    def member(name: str) -> ManagedConsumer:
        return ManagedConsumer(
            name,
            make_consumer(worker_settings, bootstrap, group_id=group),
            [topic],
            handler,
            ordered=True,
            revoke_wait=revoke_wait_seconds(worker_settings),
        )

    producer = make_producer(worker_settings, bootstrap)
    await producer.start()
    first, second = member("first"), member("second")
    try:
        await first.start()
        await (await producer.send(topic, b"slow", key=b"shop"))
        await asyncio.wait_for(slow_started.wait(), 30)
        await second.start()  # a worker scaled up while the write runs
        await asyncio.wait_for(asyncio.gather(first.wait_assigned(), second.wait_assigned()), 60)
        # the same key, so the same partition: handled only after whatever its owner reads before it
        await (await producer.send(topic, b"after", key=b"shop"))
        await eventually(lambda: runs[b"after"] >= 1, timeout=60)
        assert runs[b"slow"] == 1
    finally:
        await asyncio.gather(first.stop(5), second.stop(5))
        await producer.stop()


async def test_a_join_may_take_the_whole_rebalance_timeout(worker_settings: Settings) -> None:
    """A JoinGroup is answered once every member has rejoined (one may wait the rebalance timeout
    out for its running records): under aiokafka's 40 s default the others timed out and rejoined."""
    settings = worker_settings.model_copy(update={"kafka_rebalance_timeout_ms": 120_000})
    consumer = make_consumer(settings, settings.kafka_bootstrap_servers, group_id="g")
    try:
        assert consumer._client._request_timeout_ms > settings.kafka_rebalance_timeout_ms
    finally:
        await consumer.stop()


async def test_a_member_that_cannot_take_more_records_stays_in_its_group(worker_settings: Settings) -> None:
    """A consumer with a full read-ahead does not poll; after aiokafka's poll interval (10 min) it
    left the group before its revocation could wait for the records it was running, and their next
    owner ran them again. 24 days: far past any wait a record has."""
    consumer = make_consumer(worker_settings, worker_settings.kafka_bootstrap_servers, group_id="g")
    try:
        assert consumer._max_poll_interval_ms >= 24 * 24 * 3600 * 1000
    finally:
        await consumer.stop()
