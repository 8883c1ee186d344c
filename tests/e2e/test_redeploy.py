"""Redeploying while a 2,000-order sync runs: in-flight messages finish on their version."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from simulator.config import SimulatorConfig
from tests.runtime.helpers import SinkReader
from worker.catalog import publish_deployment
from worker.envelope import H, Message
from worker.starter import run_manual
from worker.topology import parse_topology

from .conftest import running_stack

pytestmark = pytest.mark.e2e

ORDERS = 2000


async def test_redeploy_during_a_running_sync_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = SimulatorConfig(orders=ORDERS, products=5, bucket_size=1_000_000, latency_ms=2)
    async with running_stack(kafka_bootstrap, tmp_path, config) as stack:
        rt = stack.worker.rt
        v1 = rt.catalog.active("order-sync")
        assert v1 is not None
        before = await run_manual(rt, "order-sync", user=stack.install.user, body={})

        # v2 publishes to another topic, so where each message ends up shows which version routed it
        data = yaml.safe_load(v1.source)
        data["nodes"]["out"] = {"sink": "shoptet.orders.v2"}
        data["nodes"]["detail"]["concurrency"] = 37  # and the running consumer takes it up
        data["description"] = "v2: details go to shoptet.orders.v2"
        v2 = parse_topology(yaml.safe_dump(data, sort_keys=False), "order-sync v2", rt.registry)
        await publish_deployment(rt.producer, rt.topics.control, v2)
        deadline = time.monotonic() + 30
        while (active := rt.catalog.active("order-sync")) is None or active.version != v2.version:
            assert time.monotonic() < deadline, "the running worker never took up the new version"
            await _tick()
        [detail] = [c for c in stack.worker.consumers if c.name == "shoptet-get-order-detail"]
        assert (detail.concurrency, detail.per_key) == (37, 37)
        # the first process is still running on v1 when v2 becomes active
        v1_sink = SinkReader(stack.settings.kafka_bootstrap_servers, "shoptet.orders")
        so_far = {m.body["code"] for m in _of(await v1_sink.read_all(), before)}
        assert len(so_far) < ORDERS, "the sync finished before the redeploy: nothing tested"

        after = await run_manual(rt, "order-sync", user=stack.install.user, body={})
        assert after.headers[H.TOPOLOGY_VERSION] == v2.version

        old = await v1_sink.collect_until(lambda ms: len({m.body["code"] for m in _of(ms, before)}) >= ORDERS)
        new_sink = SinkReader(stack.settings.kafka_bootstrap_servers, "shoptet.orders.v2")
        new = await new_sink.collect_until(lambda ms: len({m.body["code"] for m in _of(ms, after)}) >= ORDERS)

    all_codes = set(stack.sim.state.eshops[0].orders)
    assert {m.body["code"] for m in _of(old, before)} == all_codes
    assert {m.headers[H.TOPOLOGY_VERSION] for m in _of(old, before)} == {v1.version}
    assert {m.body["code"] for m in _of(new, after)} == all_codes
    assert {m.headers[H.TOPOLOGY_VERSION] for m in _of(new, after)} == {v2.version}
    assert not _of(new, before), "a message of the old process was routed by the new version"


def _of(messages: list[Message], start: Message) -> list[Message]:
    return [m for m in messages if m.correlation_id == start.correlation_id]


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.1)
