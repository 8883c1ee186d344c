"""Benchmark 3: what a worker hop costs, against a plain aiokafka consume-produce loop.

Both sides run on the same embedded broker in the same run, with the same message count, payload,
headers, keys, partitions and producer/consumer settings (``worker.kafka``):

- raw: five consumers (one group each) relay topic ``i`` to topic ``i+1``, sending a fetched batch,
  awaiting the broker's acknowledgements, then committing: at-least-once, like the worker.
- worker: a Worker runs a topology of five distinct pass-through nodes (``bench.passthrough_nodes``)
  ending in a sink; each hop is also counted in the process ledger, as it is in production.

The clock runs from the first message produced until the last topic holds every message.
Target: worker messages/s >= 0.7 x raw messages/s.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from bench.common import BenchResult, bench_settings, env_int, throughput_result
from bench.offsets import RecordCounter
from bench.passthrough_nodes import CHAIN
from worker.app import Worker, tune_garbage_collector
from worker.broker import EmbeddedBroker
from worker.envelope import Message
from worker.kafka import ensure_topics, make_consumer, make_producer
from worker.processes import start_record
from worker.router import start_headers
from worker.settings import Settings
from worker.tasks import cancel_and_wait
from worker.topology import TopologyVersion, parse_topology

NAME = "hop-overhead"
TARGET = 0.7
TOPOLOGY = "bench-hops"


@dataclass
class Sizes:
    messages: int
    payload_bytes: int
    keys: int
    concurrency: int

    @classmethod
    def from_env(cls, **given: int | None) -> Sizes:
        defaults = {
            "messages": env_int("BENCH_HOP_MESSAGES", 20_000),
            "payload_bytes": env_int("BENCH_HOP_PAYLOAD", 256),
            "keys": env_int("BENCH_HOP_KEYS", 10),
            "concurrency": env_int("BENCH_HOP_CONCURRENCY", 100),
        }
        return cls(**{k: given.get(k) or v for k, v in defaults.items()})


def chain_topology(concurrency: int) -> str:
    ids = [f"h{i + 1}" for i in range(len(CHAIN))]
    lines = [f"name: {TOPOLOGY}", "imports: [bench.passthrough_nodes]", "start:", "  - manual: true", "nodes:"]
    for i, (node_id, node) in enumerate(zip(ids, CHAIN, strict=True)):
        follower = ids[i + 1] if i + 1 < len(ids) else "out"
        lines.append(f"  {node_id}: {{node: {node}, next: [{follower}], concurrency: {concurrency}}}")
    lines.append("  out: {sink: bench.hops.out}")
    return "\n".join(lines) + "\n"


def start_messages(tv: TopologyVersion, sizes: Sizes) -> list[Message]:
    """The messages both sides relay: a process start as ``run_manual`` would publish it."""
    body = {"payload": "x" * sizes.payload_bytes}
    return [
        Message(body={**body, "n": i}, headers=start_headers(tv, "h1", user=f"shop-{i % sizes.keys}", application=None))
        for i in range(sizes.messages)
    ]


@dataclass
class Side:
    """One side's run: messages per second through the chain, and process CPU per message.

    CPU is the steadier number: the raw relay's rate follows the broker's latency, its CPU does not.
    """

    rate: float
    cpu_us: float
    delivered: int


class _Clock:
    """Wall and process CPU time from ``start()`` (the first message produced)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def side(self, messages: int, delivered: int) -> Side:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return Side(messages / wall, cpu / messages * 1e6, delivered)


async def produce_all(producer: AIOKafkaProducer, topic: str, messages: list[Message]) -> None:
    futures = [await producer.send(topic, m.encode_body(), key=m.key(), headers=m.kafka_headers()) for m in messages]
    await asyncio.gather(*futures)


# --- raw aiokafka ---------------------------------------------------------------------------------


class _Assigned(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.event.set()


async def _relay(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, out_topic: str) -> None:
    """Consume a batch, produce each record to ``out_topic``, await the acks, commit; forever."""
    while True:
        batches = await consumer.getmany(timeout_ms=500)
        futures = [
            await producer.send(out_topic, r.value, key=r.key, headers=list(r.headers or ()))
            for records in batches.values()
            for r in records
        ]
        if futures:
            await asyncio.gather(*futures)
            await consumer.commit()


async def run_raw(settings: Settings, bootstrap: str, messages: list[Message], timeout: float) -> Side:
    """Messages through five plain aiokafka relays."""
    topics = [f"{settings.kafka_topic_prefix}.raw.{i}" for i in range(len(CHAIN) + 1)]
    await ensure_topics(settings, bootstrap, topics)
    producer = make_producer(settings, bootstrap)
    await producer.start()
    consumers, listeners = [], []
    for i in range(len(CHAIN)):
        consumer = make_consumer(settings, bootstrap, group_id=f"{settings.kafka_topic_prefix}.raw-{i}")
        listener = _Assigned()
        consumers.append(consumer)
        listeners.append(listener)
    await asyncio.gather(*(c.start() for c in consumers))
    for consumer, listener, topic in zip(consumers, listeners, topics, strict=False):
        consumer.subscribe([topic], listener=listener)
    tasks = [
        asyncio.create_task(_relay(c, producer, topics[i + 1]), name=f"relay-{i}") for i, c in enumerate(consumers)
    ]
    sink = await RecordCounter.open(bootstrap, topics[-1])
    try:
        await asyncio.wait_for(asyncio.gather(*(li.event.wait() for li in listeners)), 60)
        clock = _Clock()
        clock.start()
        await produce_all(producer, topics[0], messages)
        delivered = await sink.wait_for(len(messages), timeout, clock.wall, what="raw messages")
        return clock.side(len(messages), delivered)
    finally:
        await cancel_and_wait(*tasks)
        await sink.close()
        await asyncio.gather(*(c.stop() for c in consumers), return_exceptions=True)
        await producer.stop()


# --- the worker ------------------------------------------------------------------------------------


async def run_worker(settings: Settings, sizes: Sizes, timeout: float) -> Side:
    """Messages through the worker's five-node chain."""
    worker = Worker(settings, node_names=CHAIN)
    tv = parse_topology(chain_topology(sizes.concurrency), origin=TOPOLOGY, registry=worker.registry)
    await worker.start(deploy=[tv])
    sink = await RecordCounter.open(worker.rt.bootstrap_servers, "bench.hops.out")
    try:
        messages = start_messages(tv, sizes)
        # the ledger's start records, as run_manual writes them, go in before the clock starts
        ledger = [Message(body=start_record(m)).with_key(m.process_id) for m in messages]
        await produce_all(worker.rt.producer, worker.rt.topics.processes, ledger)
        clock = _Clock()
        clock.start()
        await produce_all(worker.rt.producer, worker.rt.topics.node(CHAIN[0]), messages)
        delivered = await sink.wait_for(len(messages), timeout, clock.wall, what="worker messages")
        return clock.side(len(messages), delivered)
    finally:
        await sink.close()
        await worker.stop()


@dataclass
class Round:
    """One measurement of both sides on a fresh embedded broker."""

    raw: Side
    worker: Side

    @property
    def ratio(self) -> float:
        return self.worker.rate / self.raw.rate


async def run_round(sizes: Sizes, timeout: float) -> Round:
    with tempfile.TemporaryDirectory(prefix="bench-hops-") as tmp:
        async with EmbeddedBroker() as broker:
            bootstrap = broker.bootstrap_servers
            settings = bench_settings(bootstrap, Path(tmp), redis_url="")
            probe = parse_topology(chain_topology(sizes.concurrency), origin=TOPOLOGY)
            tune_garbage_collector()  # the worker tunes it when it starts; the raw loop gets the same
            raw = await run_raw(settings, bootstrap, start_messages(probe, sizes), timeout)
            worker = await run_worker(settings, sizes, timeout)
    return Round(raw, worker)


async def run(
    messages: int | None = None,
    payload_bytes: int | None = None,
    keys: int | None = None,
    concurrency: int | None = None,
    rounds: int | None = None,
    timeout: float = 600.0,
) -> BenchResult:
    """Sizes: ``messages`` (BENCH_HOP_MESSAGES, 20,000), ``payload_bytes`` (BENCH_HOP_PAYLOAD, 256),
    ``keys`` (BENCH_HOP_KEYS, 10 e-shops), ``concurrency`` per node (BENCH_HOP_CONCURRENCY, 100).

    Both sides run ``rounds`` times (BENCH_HOP_ROUNDS, 3), each round on a fresh broker, and the
    round with the median ratio is reported: the raw relay waits for every batch's acknowledgements
    before it fetches again, so its rate follows the broker's latency and varied 3,000-6,500 msg/s
    between single runs on one machine.
    """
    sizes = Sizes.from_env(messages=messages, payload_bytes=payload_bytes, keys=keys, concurrency=concurrency)
    measured = [await run_round(sizes, timeout) for _ in range(rounds or env_int("BENCH_HOP_ROUNDS", 3))]
    median = sorted(measured, key=lambda r: r.ratio)[len(measured) // 2]
    result = throughput_result(NAME, median.worker.rate, "msg/s", median.raw.rate, TARGET)
    result.notes += [
        f"{sizes.messages} messages x 5 hops, {sizes.payload_bytes} B payload, {sizes.keys} keys, "
        f"node concurrency {sizes.concurrency}, 3 partitions per topic",
        f"raw aiokafka relay (batch -> send -> await acks -> commit): {median.raw.rate:.0f} msg/s; limit = raw",
        "rounds (worker / raw msg/s, ratio), the median reported: "
        + "; ".join(f"{r.worker.rate:.0f} / {r.raw.rate:.0f} = {r.ratio:.2f}" for r in measured),
        "process CPU per message over the 5 hops (worker / raw): "
        + "; ".join(f"{r.worker.cpu_us:.0f} / {r.raw.cpu_us:.0f} us" for r in measured),
        "worker hops also decode, route and re-encode each message and count it in the process ledger "
        "(summed per process, one ledger record per partition every few ms); the starts' ledger records "
        "are written before the clock starts",
    ]
    result.details.update(
        raw_msg_per_s=round(median.raw.rate, 1),
        worker_msg_per_s=round(median.worker.rate, 1),
        delivered=median.worker.delivered,
        rounds=[
            {
                "raw_msg_per_s": round(r.raw.rate, 1),
                "worker_msg_per_s": round(r.worker.rate, 1),
                "raw_cpu_us_per_msg": round(r.raw.cpu_us, 1),
                "worker_cpu_us_per_msg": round(r.worker.cpu_us, 1),
            }
            for r in measured
        ],
    )
    return result
