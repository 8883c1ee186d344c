"""The tests' topic watch counts only what was written after it began, on the embedded broker too."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from worker.envelope import Message

from .helpers import TopicWatch

pytestmark = pytest.mark.e2e


async def test_a_watch_begun_after_a_batch_of_records_sees_only_later_ones(kafka_bootstrap: str) -> None:
    """Tansu 0.6 reports the last batch's base offset + 1 as a partition's end: a watch that trusted
    it took the rest of that batch for new records (a scheduler test saw a shop fired twice)."""
    topic = f"watch.{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)  # three in one batch
    await producer.start()
    try:
        value = Message(body={}, headers={}).encode_body()
        await asyncio.gather(*[await producer.send(topic, value, key=b"shop") for _ in range(3)])
        watch = await TopicWatch.begin(kafka_bootstrap, {"t": topic})
        await (await producer.send(topic, value, key=b"shop"))
        assert len(await watch.new("t")) == 1
    finally:
        await producer.stop()
