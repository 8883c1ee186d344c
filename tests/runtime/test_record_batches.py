"""Node outputs go out in whole record batches: in order per partition, each record's future settled
by its batch's acknowledgement, a failed batch failing its records (so that they are resent)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

from tests.runtime.helpers import SinkReader
from worker.kafka import PartitionLists, ensure_topics, partition_for_key
from worker.record_batches import RecordBatcher
from worker.settings import Settings


class FakeBuilder:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes, headers: Any) -> object | None:
        if self.records and len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    """Hands out builders of ``capacity`` records; keeps each submitted batch's acknowledgement open."""

    def __init__(self, capacity: int = 3, refuse: int = 0) -> None:
        self.capacity = capacity
        self.refuse = refuse
        self.submitted: list[tuple[str, int, FakeBuilder, asyncio.Future[None]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.capacity)

    async def send_batch(self, batch: FakeBuilder, topic: str, *, partition: int) -> asyncio.Future[None]:
        if self.refuse:
            self.refuse -= 1
            raise KafkaTimeoutError()
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submitted.append((topic, partition, batch, ack))
        return ack


def batcher_for(producer: FakeProducer) -> RecordBatcher:
    return RecordBatcher(producer, linger=0.001)  # type: ignore[arg-type]


async def test_records_of_a_partition_go_in_order_and_share_their_batchs_acknowledgement() -> None:
    producer = FakeProducer(capacity=3)
    batcher = batcher_for(producer)
    futures = [await batcher.send("t", str(i).encode(), b"shop-a", []) for i in range(5)]
    await batcher.close()

    assert [len(b.records) for _, _, b, _ in producer.submitted] == [3, 2]  # the first one filled up
    sent = [value for _, _, b, _ in producer.submitted for _, value in b.records]
    assert sent == [b"0", b"1", b"2", b"3", b"4"]
    partition = partition_for_key(b"shop-a", [0, 1, 2], [0, 1, 2])
    assert {(t, p) for t, p, _, _ in producer.submitted} == {("t", partition)}
    assert futures[0] is futures[2] and futures[3] is futures[4] and futures[0] is not futures[3]

    assert not any(f.done() for f in futures)  # the broker has not acknowledged yet
    producer.submitted[1][3].set_result(None)
    producer.submitted[0][3].set_exception(KafkaTimeoutError())
    await asyncio.sleep(0)
    assert futures[3].result() is None
    assert isinstance(futures[0].exception(), KafkaTimeoutError)  # the caller sends those again


async def test_a_batch_the_producer_refuses_fails_its_records() -> None:
    producer = FakeProducer(refuse=1)
    batcher = batcher_for(producer)
    refused = await batcher.send("t", b"x", b"k", [])
    await batcher.close()
    assert isinstance(refused.exception(), KafkaTimeoutError)

    again = await batcher.send("t", b"x", b"k", [])
    await batcher.close()
    producer.submitted[0][3].set_result(None)
    assert await again is None


async def test_every_record_reaches_the_broker_in_order_per_key(worker_settings: Settings) -> None:
    bootstrap = worker_settings.kafka_bootstrap_servers
    topic = f"{worker_settings.kafka_topic_prefix}.batched"
    await ensure_topics(worker_settings, bootstrap, [topic])
    # small batches, so that one partition goes through many of them
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=2048)
    await producer.start()
    try:
        batcher = RecordBatcher(producer)
        keys = [b"shop-a", b"shop-b", b"shop-c"]
        acks = [await batcher.send(topic, f"{n}".encode(), keys[n % 3], [("n", str(n).encode())]) for n in range(600)]
        await batcher.close()
        await asyncio.wait_for(asyncio.gather(*set(acks)), 30)
        assert len(set(acks)) > 3  # more than one batch per partition
    finally:
        await producer.stop()

    messages = await SinkReader(bootstrap, topic).collect_until(lambda seen: len(seen) >= 600, timeout=60)
    by_key: dict[str, list[int]] = {}
    for message in messages:
        n = int(message.body)
        assert message.headers["n"] == str(n)
        by_key.setdefault(keys[n % 3].decode(), []).append(n)
    for key in keys:
        numbers = by_key[key.decode()]
        assert numbers == sorted(numbers) and len(numbers) == 200


class FlakyMetadata:
    """``partitions_for`` answers from ``answers`` in turn: a partition set, or an error to raise."""

    def __init__(self, *answers: set[int] | Exception) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def partitions_for(self, topic: str) -> set[int]:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_a_lookup_the_broker_cannot_answer_is_asked_again_until_it_can(monkeypatch: Any) -> None:
    """A record's partition must not fail for late metadata: that sent its message to trash as if the
    node were broken."""
    monkeypatch.setattr("worker.kafka.backoff_delays", lambda first, cap: iter([0.001] * 10))
    metadata = FlakyMetadata(KafkaTimeoutError(), UnknownTopicOrPartitionError(), {0, 1})
    assert await PartitionLists(metadata, ttl=60).of("t") == [0, 1]  # type: ignore[arg-type]
    assert metadata.asked == 3


async def test_once_known_the_last_list_serves_while_the_broker_cannot_answer() -> None:
    metadata = FlakyMetadata({0, 1, 2}, KafkaTimeoutError(), {0, 1, 2, 3})
    partitions = PartitionLists(metadata, ttl=0.05)  # type: ignore[arg-type]
    assert await partitions.of("t") == [0, 1, 2]
    await asyncio.sleep(0.06)
    assert await partitions.of("t") == [0, 1, 2]  # the broker failed: the last list, no error
    assert await partitions.of("t") == [0, 1, 2]  # and it is not asked again at once (each try blocks)
    assert metadata.asked == 2
    await asyncio.sleep(0.06)
    assert await partitions.of("t") == [0, 1, 2, 3]


async def test_a_topic_that_stays_unknown_fails_the_record_after_the_wait(monkeypatch: Any) -> None:
    """A deleted sink, or one an ACL refuses: the message goes to trash with the reason rather than
    waiting for good (with its key's later messages behind it)."""
    monkeypatch.setattr("worker.kafka.backoff_delays", lambda first, cap: iter([0.01] * 1000))
    metadata = FlakyMetadata(*[UnknownTopicOrPartitionError()] * 1000)
    partitions = PartitionLists(metadata, ttl=60, give_up_after=0.05)  # type: ignore[arg-type]
    with pytest.raises(UnknownTopicOrPartitionError):
        await partitions.of("gone")
    asked = metadata.asked
    assert 2 <= asked < 1000
    with pytest.raises(UnknownTopicOrPartitionError):  # the topic's next records do not wait again
        await partitions.of("gone")
    assert metadata.asked == asked
