"""The broker goes away and a new (empty, memory-only) one comes up on the same port.

The worker keeps running: after the operator re-deploys the topology, a new process must complete
without restarting the worker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.runtime.helpers import SinkReader, distinct_items, settings_env
from tests.support import settings_for_test
from worker.broker import EmbeddedBroker, free_port
from worker.catalog import publish_deployment
from worker.control import control_client
from worker.kafka import make_producer
from worker.settings import Settings
from worker.starter import run_manual
from worker.topics import TopicNames
from worker.topology import parse_topology

from .helpers import spawn_child

pytestmark = pytest.mark.e2e

NODES = ["test-emit-items", "test-passthrough"]
ITEMS = 50


def topology(sink: str) -> str:
    return f"""\
name: restart
imports: [tests.runtime.sample_nodes]
start:
  - manual: true
nodes:
  emit: {{node: test-emit-items, next: [mid]}}
  mid: {{node: test-passthrough, next: [out], retry: {{interval: 0.2, max_hops: 50}}}}
  out: {{sink: {sink}}}
"""


async def run_and_collect(settings: Settings, sink: str, user: str, timeout: float) -> set[int]:
    async with control_client(settings) as control:
        start = await run_manual(control, "restart", user=user, body={"count": ITEMS, "per_page": 10})
    reader = SinkReader(settings.kafka_bootstrap_servers, sink)
    messages = await reader.collect_until(
        lambda ms: len(distinct_items([m for m in ms if m.correlation_id == start.correlation_id])) >= ITEMS,
        timeout=timeout,
    )
    return distinct_items([m for m in messages if m.correlation_id == start.correlation_id])


async def test_worker_recovers_when_the_broker_comes_back_empty(tmp_path: Path, topic_prefix: str) -> None:
    port = free_port()
    broker = EmbeddedBroker(port)
    await asyncio.to_thread(broker.start)
    settings = settings_for_test(
        broker.bootstrap_servers, tmp_path, prefix=topic_prefix, default_retry_interval_seconds=0.2
    )
    sink = f"{topic_prefix}.out"
    source = topology(sink)
    file = tmp_path / "restart.yaml"
    file.write_text(source)
    child = spawn_child({**settings_env(settings), "LOG_LEVEL": "WARNING"}, file, NODES, tmp_path / "worker.log")
    try:
        await child.wait_ready()
        assert await run_and_collect(settings, sink, "shop-1", timeout=30) == set(range(ITEMS))

        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(3)
        broker = EmbeddedBroker(port)  # same address, nothing in it: no topics, no groups, no catalog
        await asyncio.to_thread(broker.start)

        producer = make_producer(settings, broker.bootstrap_servers)
        await producer.start()
        try:  # what an operator does after losing the broker: deploy again (same source, same version)
            tv = parse_topology(source)
            await publish_deployment(producer, TopicNames(topic_prefix).control, tv)
        finally:
            await producer.stop()

        assert child.proc.poll() is None, "the worker exited when the broker went away"
        # the same user: its records land on the partition whose old offsets the worker still holds
        assert await run_and_collect(settings, sink, "shop-1", timeout=45) == set(range(ITEMS))
    finally:
        child.stop()
        child.kill()
        errors = [line for line in child.log().splitlines() if "ERROR" in line]
        print(f"worker log: {len(errors)} error line(s); first: {errors[:1]}")
        await asyncio.to_thread(broker.stop)
