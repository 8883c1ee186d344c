"""Faults, poison and replay against the simulator: nothing is lost, the token limit always holds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from simulator.config import SimulatorConfig
from tests.runtime.helpers import SinkReader
from worker.envelope import Message
from worker.starter import find_start, run_manual, start_process
from worker.trash import replay

from .conftest import running_stack

pytestmark = pytest.mark.e2e


async def test_order_sync_of_2000_orders_survives_10_percent_faults(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = SimulatorConfig(
        orders=2000,
        products=10,
        bucket_size=1_000_000,
        fault_rate=0.10,
        fault_kinds=["500", "503", "429", "423", "drop"],
        latency_ms=2,
    )
    async with running_stack(kafka_bootstrap, tmp_path, config, max_hops=30) as stack:
        rt = stack.worker.rt
        tv = rt.catalog.active("order-sync")
        assert tv is not None
        cron = find_start(tv, "cron")
        assert cron is not None
        start = await start_process(rt, tv, cron, user=stack.install.user, body={})
        reader = SinkReader(stack.settings.kafka_bootstrap_servers, "shoptet.orders")

        def codes(ms: list[Message]) -> set[str]:
            return {m.body["code"] for m in ms if m.correlation_id == start.correlation_id}

        await reader.collect_until(lambda ms: len(codes(ms)) >= 2000, timeout=240)
        stats = stack.sim.state.stats.snapshot()
        assert codes(reader.messages) == set(stack.sim.state.eshops[0].orders)
        assert await rt.store.count_trash() == 0
        assert sum(stats["faults"].values()) > 100, stats["faults"]  # the faults really happened
        token = stack.sim.premium_token(0)
        assert stats["peakRequestsPerToken"][token] <= 3  # arrived at once, refused ones too
        assert stats["rateLimitedByReason"].get("token", 0) == 0  # never a 4th connection
        assert stats["rateLimitedByReason"].get("ip", 0) == 0


async def test_poison_goes_to_trash_and_replay_completes_after_the_fault_is_gone(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = SimulatorConfig(orders=5, products=5, bucket_size=100_000, fault_kinds=["500"])
    async with running_stack(kafka_bootstrap, tmp_path, config, max_hops=2) as stack:
        stack.sim.state.config.fault_rate = 1.0  # after the install was verified
        rt = stack.worker.rt
        tv = rt.catalog.active("order-webhook")
        assert tv is not None
        start_spec = find_start(tv, "webhook", "order:update")
        assert start_spec is not None
        code = next(iter(stack.sim.state.eshops[0].orders))
        payload = {
            "eshopId": 100001,
            "event": "order:update",
            "eventCreated": "2026-11-24T05:00:00+0100",
            "eventInstance": code,
        }
        start = await start_process(rt, tv, start_spec, user=stack.install.user, body=payload)

        deadline = time.monotonic() + 60
        while await rt.store.count_trash() == 0:
            assert time.monotonic() < deadline, "the failing message never reached trash"
            await _sleep()
        [entry] = await rt.store.list_trash()
        assert entry.http_status == 500
        assert entry.node_name == "shoptet-get-order-detail"
        assert entry.attempts == 3  # first try + 2 retries
        assert "gave up after 2 retries" in entry.error_message
        assert entry.body == payload
        assert stack.sim.premium_token(0) not in entry.model_dump_json()  # never a secret in trash

        stack.sim.state.config.fault_rate = 0.0
        await replay(rt.store, rt, entry)
        assert await rt.store.count_trash() == 0
        reader = SinkReader(stack.settings.kafka_bootstrap_servers, "shoptet.orders")
        messages = await reader.collect_until(
            lambda ms: any(m.correlation_id == start.correlation_id for m in ms), timeout=60
        )
        [done] = [m for m in messages if m.correlation_id == start.correlation_id]
        assert done.body["code"] == code

        # the ledger counts the replayed message in flight, so its process ends at 0, not -1
        assert stack.worker.tracker is not None
        book = stack.worker.tracker.book
        deadline = time.monotonic() + 30
        # handled: three failed detail attempts and the replayed one
        while (counts := book.processes.get(start.process_id)) is None or counts.handled < 4:
            assert time.monotonic() < deadline, f"the ledger never counted the replayed message: {counts}"
            await _sleep()
        # out of trash again: the replay took it out of the trashed count (the process is not failed)
        assert (counts.handled, counts.trashed, counts.in_flight) == (4, 0, 0)


async def test_webhook_event_held_by_another_url_is_trashed_and_registered_after_replay(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Migrating from Orchesty: its URL still holds order:update, and Shoptet keeps one URL per event.
    The other events are registered all the same; the held one waits in trash until it is freed."""
    config = SimulatorConfig(orders=5, products=5, bucket_size=100_000)
    async with running_stack(kafka_bootstrap, tmp_path, config) as stack:
        rt = stack.worker.rt
        eshop_id = stack.sim.state.eshops[0].eshop_id
        orchesty = "https://orchesty.test/webhook/topologies/order-webhook/nodes/start/token/s3cr3t"
        [foreign] = stack.sim.state.webhooks.register(eshop_id, [("order:update", orchesty, None)])
        expected = set(rt.catalog.webhook_events())
        assert "order:update" in expected

        async def registered() -> set[str]:
            return {w.event for w in await rt.store.list_webhooks(stack.install.user, "shoptet-premium")}

        await run_manual(rt, "webhooks-subscribe", user=stack.install.user, body={})
        deadline = time.monotonic() + 60
        while await rt.store.count_trash() == 0:
            assert time.monotonic() < deadline, "the held event never reached trash"
            await _sleep()
        [entry] = await rt.store.list_trash()
        assert entry.node_name == "shoptet-subscribe-webhooks"
        assert f"order:update -> https://orchesty.test/… (webhook {foreign.id})" in entry.error_message
        assert "s3cr3t" not in entry.model_dump_json()
        assert await registered() == expected - {"order:update"}

        stack.sim.state.webhooks.delete(eshop_id, foreign.id)
        await replay(rt.store, rt, entry)
        deadline = time.monotonic() + 60
        while await registered() != expected:
            assert time.monotonic() < deadline, f"registered {await registered()} != {expected}"
            await _sleep()
        urls = {w.event: w.url for w in stack.sim.state.webhooks.registered(eshop_id)}
        assert urls["order:update"].endswith("/webhooks/shoptet/shoptet-premium")
        assert await rt.store.count_trash() == 0


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.2)
