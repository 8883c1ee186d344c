"""Where benchmark 3's gap comes from: the hop chain with stripped-down handlers, against raw.

Not part of ``make bench`` (it replaces the worker's record handler, which no real run does); run it
to check the README's explanation of the hop-overhead row:

    python -m bench.hop_floor            # BENCH_HOP_MESSAGES etc. as for hop-overhead

- ``forward``: each node sends the record's bytes and headers on unchanged (through the worker's
  record batcher). What is left is the consumer, offsets and producer: the Kafka plumbing.
- ``minimal``: decode, find the topology version, run the node, route, re-encode, produce. No
  ledger, metrics, node context, retries or acknowledgement tracking.
- ``worker``: the real handler, as in benchmark 3.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka.structs import ConsumerRecord

from bench.common import bench_settings, quiet_logs
from bench.hop_overhead import TOPOLOGY, Sizes, chain_topology, run_raw, run_worker, start_messages
from bench.passthrough_nodes import CHAIN
from worker.app import tune_garbage_collector
from worker.broker import EmbeddedBroker
from worker.envelope import H, Message
from worker.node import Connector
from worker.processor import NodeProcessor
from worker.router import route
from worker.topology import parse_topology

Handle = Callable[[NodeProcessor, ConsumerRecord[bytes, bytes]], Awaitable[Any]]


async def forward(self: NodeProcessor, record: ConsumerRecord[bytes, bytes]) -> Any:
    index = CHAIN.index(self.node.name)
    topic = self.rt.topics.node(CHAIN[index + 1]) if index + 1 < len(CHAIN) else "bench.hops.out"
    return await self.rt.outputs.send(topic, record.value or b"", record.key, list(record.headers))


async def minimal(self: NodeProcessor, record: ConsumerRecord[bytes, bytes]) -> Any:
    message = Message.decode(record.value, record.headers)
    tv = self.rt.catalog.get(message.headers[H.TOPOLOGY_NAME], message.headers[H.TOPOLOGY_VERSION])
    assert tv is not None and isinstance(self.node, Connector)
    node_id = message.headers[H.NODE_ID]
    result = await self.node.process(message, None)  # type: ignore[arg-type]  # pass-through nodes ignore it
    ack = None
    for out in route(self.rt.topics, tv, node_id, message, result.body):
        m = out.message
        ack = await self.rt.outputs.send(out.topic, m.encode_body(), m.key(), m.kafka_headers())
    return ack


async def measure(variant: str, handle: Handle | None, sizes: Sizes) -> tuple[float, float]:
    """(variant msg/s, raw msg/s) on one fresh embedded broker."""
    original = NodeProcessor.handle
    with tempfile.TemporaryDirectory(prefix="bench-hop-floor-") as tmp:
        async with EmbeddedBroker() as broker:
            settings = bench_settings(broker.bootstrap_servers, Path(tmp), redis_url="")
            tune_garbage_collector()
            probe = parse_topology(chain_topology(sizes.concurrency), origin=TOPOLOGY)
            raw = (await run_raw(settings, broker.bootstrap_servers, start_messages(probe, sizes), 600)).rate
            if handle is not None:
                NodeProcessor.handle = handle  # type: ignore[method-assign]
            try:
                rate = (await run_worker(settings, sizes, 600)).rate
            finally:
                NodeProcessor.handle = original  # type: ignore[method-assign]
    return rate, raw


async def main() -> None:
    quiet_logs()
    sizes = Sizes.from_env()
    for variant, handle in (("forward", forward), ("minimal", minimal), ("worker", None)):
        rate, raw = await measure(variant, handle, sizes)
        print(f"{variant:8s} {rate:8,.0f} msg/s   raw {raw:8,.0f} msg/s   ratio {rate / raw:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
