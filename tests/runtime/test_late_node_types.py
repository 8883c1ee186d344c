"""A deploy that brings a new custom node type runs on the workers already up, no restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.runtime.helpers import SinkReader
from tests.support import settings_for_test
from worker.app import Worker
from worker.catalog import publish_deployment, publish_enabled
from worker.kafka import ensure_topics
from worker.registry import NodeRegistry
from worker.settings import Settings
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

NEEDS_ERP = """\
name: needs-erp
imports: [tests.runtime.unbuildable_nodes]
start:
  - manual: true
nodes:
  erp: {node: test-needs-erp, next: [out]}
  out: {sink: erp.out}
"""


async def _consumed(worker: Worker, node_type: str) -> None:
    deadline = time.monotonic() + 60
    while not any(c.name == node_type and c.assigned.is_set() for c in worker.consumers):
        assert time.monotonic() < deadline, f"no consumer for {node_type}"
        await asyncio.sleep(0.2)


def _sample_worker(settings: Settings) -> Worker:
    registry = NodeRegistry()
    registry.import_path("tests.runtime.sample_nodes")
    return Worker(settings, registry=registry)


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


async def test_a_node_type_no_worker_can_build_leaves_the_rest_running_also_after_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A custom node whose constructor fails (deployed by a CLI that did not build it): its listener's
    error ended the follower's poll, skipping the deploys fetched with it, and every later start
    of a worker crashed. And after a restart, a disabled topology's custom node type was consumed by
    no worker, so its messages in flight waited for good."""
    settings = settings_for_test(kafka_bootstrap, tmp_path)
    worker = _sample_worker(settings)
    await worker.start()
    try:
        for source, origin in ((NEEDS_ERP, "needs-erp.yaml"), (LATE, "late.yaml")):
            tv = parse_topology(source, origin)
            await ensure_topics(settings, kafka_bootstrap, sorted(tv.own_topics()))
            await publish_deployment(worker.rt.producer, worker.rt.topics.control, tv)
        await _consumed(worker, "test-late-echo")
        late = worker.rt.catalog.deployed["late"]
        await publish_enabled(worker.rt.producer, worker.rt.topics.control, late, False)
        deadline = time.monotonic() + 30
        while worker.rt.catalog.current["late"].enabled:
            assert time.monotonic() < deadline, "the disable did not arrive"
            await asyncio.sleep(0.1)
    finally:
        await worker.stop()

    restarted = _sample_worker(settings)
    await restarted.start()  # raised KeyError('ERP_URL') before
    try:
        await _consumed(restarted, "test-late-echo")
        assert not any(c.name == "test-needs-erp" for c in restarted.consumers)
        assert restarted.problems() == []
    finally:
        await restarted.stop()
