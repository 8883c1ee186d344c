"""A deploy that brings a new custom node type runs on the workers already up, no restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.runtime.helpers import SinkReader
from tests.support import settings_for_test
from worker.app import Worker
from worker.catalog import publish_deployment
from worker.kafka import ensure_topics
from worker.registry import NodeRegistry
from worker.starter import run_manual
from worker.topology import parse_topology

LATE = """\
name: late
imports: [tests.runtime.late_nodes]
start:
  - manual: true
nodes:
  echo: {node: test-late-echo, next: [out]}
  out: {sink: late.out}
"""


async def test_a_node_type_a_deploy_brings_is_consumed_without_a_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The deploy imported the module into the running workers' registry, but no consumer read the
    new type's topic: its processes stalled until a restart."""
    settings = settings_for_test(kafka_bootstrap, tmp_path)
    registry = NodeRegistry()
    registry.import_path("tests.runtime.sample_nodes")
    worker = Worker(settings, registry=registry)
    await worker.start()
    try:
        assert "test-late-echo" not in registry
        tv = parse_topology(LATE, "late.yaml")  # as the CLI does it, with a registry of its own
        await ensure_topics(settings, kafka_bootstrap, sorted(tv.own_topics()))
        await publish_deployment(worker.rt.producer, worker.rt.topics.control, tv)

        deadline = time.monotonic() + 60
        while not any(c.name == "test-late-echo" and c.assigned.is_set() for c in worker.consumers):
            assert time.monotonic() < deadline, "no consumer for the deployed node type"
            await asyncio.sleep(0.2)
        start = await run_manual(worker.rt, "late", user="shop", body={"n": 1})
        [out] = await SinkReader(kafka_bootstrap, "late.out").collect_until(
            lambda ms: any(m.process_id == start.process_id for m in ms), timeout=60
        )
        assert out.body == {"echo": {"n": 1}}
    finally:
        await worker.stop()
