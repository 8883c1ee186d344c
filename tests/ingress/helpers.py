"""Reading what a test published to a topic, and building signed Shoptet webhook calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.envelope import Message
from worker.webhook_keys import SIGNATURE_HEADER, sign

Record = tuple[bytes | None, Message]


async def _read(
    bootstrap: str, topic: str, start: dict[int, int] | None, *, records: bool = True
) -> tuple[list[Record], dict[int, int]]:
    """Records of ``topic`` from ``start`` (partition -> offset; None: the beginning) to its end now,
    and that end; with ``records=False`` only the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata, so partitions are known
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return [], {}
        end = await consumer.end_offsets(tps)  # before assign: afterwards it waits on the fetcher
        consumer.assign(tps)
        if not records:
            await _past_the_last_batch(consumer, end)
        for tp in tps:
            consumer.seek(tp, (start or {}).get(tp.partition, 0))
        found: list[Record] = []
        while records and await _behind(consumer, tps, end):
            batches = await consumer.getmany(*tps, timeout_ms=1000)
            for batch in batches.values():
                found += [(r.key, Message.decode(r.value, r.headers or [], required=())) for r in batch]
        return found, {tp.partition: end[tp] for tp in tps}
    finally:
        await consumer.stop()


async def _past_the_last_batch(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> None:
    """Move each end past the partition's last record batch. The embedded broker (Tansu 0.6) gives
    the last batch's *base* offset + 1 as the end: a watch begun after a batch of three records
    took two of them, written before it began, for new ones."""
    for tp, offset in end.items():
        if offset == 0:
            continue
        consumer.seek(tp, offset - 1)
        batches = await consumer.getmany(tp, timeout_ms=5000)
        end[tp] = max([offset] + [record.offset + 1 for record in batches.get(tp, [])])


async def _behind(consumer: AIOKafkaConsumer, tps: list[TopicPartition], end: dict[TopicPartition, int]) -> bool:
    for tp in tps:
        if await consumer.position(tp) < end[tp]:
            return True
    return False


@dataclass
class TopicWatch:
    """The end offsets of some topics at one moment; ``new`` reads what was written since.

    The ingress answers only after the broker acknowledged, so reading after the answer sees
    everything it published: no waiting, no timing.
    """

    bootstrap: str
    topics: dict[str, str]
    offsets: dict[str, dict[int, int]]

    @classmethod
    async def begin(cls, bootstrap: str, topics: dict[str, str]) -> TopicWatch:
        offsets = {name: (await _read(bootstrap, topic, None, records=False))[1] for name, topic in topics.items()}
        return cls(bootstrap, topics, offsets)

    async def new(self, name: str) -> list[Record]:
        return (await _read(self.bootstrap, self.topics[name], self.offsets[name]))[0]

    async def assert_nothing_new(self) -> None:
        for name in self.topics:
            assert await self.new(name) == [], f"{name} got a message"


def webhook_body(
    eshop_id: int, event: str = "order:create", instance: str = "2024000123", created: str = "2024-05-02T10:15:30+0200"
) -> bytes:
    """A delivery body as Shoptet sends it (eshopId is a number)."""
    payload: dict[str, Any] = {"eshopId": eshop_id, "event": event, "eventCreated": created, "eventInstance": instance}
    return json.dumps(payload).encode()


def signed(body: bytes, key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", SIGNATURE_HEADER: sign(key, body)}
