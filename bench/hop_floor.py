"""Where benchmark 3's gap comes from: the hop chain with stripped-down handlers, against raw.

Not part of ``make bench`` (it replaces the worker's record handler, which no real run does); run it
to check the README's explanation of the hop-overhead row:

    python -m bench.hop_floor            # BENCH_HOP_MESSAGES etc. as for hop-overhead

- ``forward``: each node sends the record's bytes and headers on unchanged (through the worker's
  record batcher). What is left is the consumer, offsets and producer: the Kafka plumbing.
- ``minimal``: decode, find the topology version, run the node, route, re-encode, produce. No
  ledger, metrics, node context, retries or acknowledgement tracking.
- ``worker``: the real handler, as in benchmark 3.

Each line prints the rate ratio and the ratio of process CPU per message (raw / variant). Both sides
are CPU-bound on one core, and the raw relay's rate varies with the broker's latency between rounds,
so the CPU ratio is the steadier of the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.structs import ConsumerRecord

from bench.common import quiet_logs
from bench.hop_overhead import Round, Sizes, run_round
from bench.passthrough_nodes import CHAIN
from worker.envelope import H, Message
from worker.node import Connector
from worker.processor import NodeProcessor
from worker.router import route

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


async def measure(handle: Handle | None, sizes: Sizes) -> Round:
    """Both sides on one fresh embedded broker, the worker's record handler replaced by ``handle``
    (the raw relay has no NodeProcessor, so it runs as in benchmark 3)."""
    original = NodeProcessor.handle
    if handle is not None:
        NodeProcessor.handle = handle  # type: ignore[method-assign]
    try:
        return await run_round(sizes, 600)
    finally:
        NodeProcessor.handle = original  # type: ignore[method-assign]


async def main() -> None:
    quiet_logs()
    sizes = Sizes.from_env()
    for variant, handle in (("forward", forward), ("minimal", minimal), ("worker", None)):
        measured = await measure(handle, sizes)
        worker, raw = measured.worker, measured.raw
        print(
            f"{variant:8s} {worker.rate:8,.0f} msg/s   raw {raw.rate:8,.0f} msg/s   ratio {measured.ratio:.2f}   "
            f"CPU per message {worker.cpu_us:4.0f} / raw {raw.cpu_us:4.0f} us = {raw.cpu_us / worker.cpu_us:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
