"""The runtime on a real broker: fan-out, routing headers, cursor hops, retries, trash, crash."""

from __future__ import annotations

import collections
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from worker.app import Worker
from worker.control import control_client
from worker.envelope import H
from worker.kafka import MAX_RECORD_BYTES
from worker.settings import Settings
from worker.starter import run_manual
from worker.topology import parse_topology
from worker.trash import replay_message

from .helpers import SinkReader, distinct_items, settings_env, spawn_worker, wait_ready

pytestmark = pytest.mark.e2e

NODES = ["test-emit-items", "test-passthrough", "test-flaky-once", "test-explode"]


def topology(name: str, sink: str, middle: str = "test-passthrough", options: str = "{}") -> str:
    return f"""\
name: {name}
imports: [tests.runtime.sample_nodes]
start:
  - manual: true
nodes:
  emit: {{node: test-emit-items, next: [mid]}}
  mid: {{node: {middle}, next: [out], concurrency: 20, options: {options}, retry: {{interval: 0.2, max_hops: 3}}}}
  out: {{sink: {sink}}}
"""


async def test_batch_of_1000_reaches_the_sink_with_process_headers(worker_settings: Settings) -> None:
    sink = f"{worker_settings.kafka_topic_prefix}.out"
    worker = Worker(worker_settings, node_names=NODES[:2])
    tv = parse_topology(topology("fanout", sink), registry=worker.registry)
    await worker.start(deploy=[tv])
    try:
        start = await run_manual(worker.rt, "fanout", user="shop-1", body={"count": 1000, "per_page": 250})
        reader = SinkReader(worker_settings.kafka_bootstrap_servers, sink)
        await reader.collect_until(lambda ms: len(distinct_items(ms)) >= 1000)
    finally:
        await worker.stop()
    messages = await reader.read_all()  # a late duplicate too (collect_until stops at the 1000th)
    assert distinct_items(messages) == set(range(1000))
    assert len(messages) == 1000  # no duplicates on a clean run
    assert all(m.body["seen"] for m in messages)
    assert {m.headers[H.PARENT_ID] for m in messages} == {start.process_id}
    assert len({m.process_id for m in messages}) == 1000
    assert {m.headers[H.CORRELATION_ID] for m in messages} == {start.correlation_id}
    assert {m.user for m in messages} == {"shop-1"}
    assert {m.headers[H.TOPOLOGY_VERSION] for m in messages} == {tv.version}


async def test_retryable_failure_is_retried_without_loss_and_stop_goes_to_trash(worker_settings: Settings) -> None:
    sink = f"{worker_settings.kafka_topic_prefix}.out"
    worker = Worker(worker_settings, node_names=NODES)
    flaky = parse_topology(topology("flaky", sink, "test-flaky-once"), registry=worker.registry)
    explode = parse_topology(topology("explode", sink + "2", "test-explode"), registry=worker.registry)
    await worker.start(deploy=[flaky, explode])
    try:
        await run_manual(worker.rt, "flaky", user="shop-1", body={"count": 20})
        messages = await SinkReader(worker_settings.kafka_bootstrap_servers, sink).collect_until(
            lambda ms: len(distinct_items(ms)) >= 20
        )
        assert distinct_items(messages) == set(range(20))
        assert all(m.headers.get(H.REPEAT_HOPS) is None for m in messages)
        # each retry started from the resume point its failed attempt gave; followers never see it
        assert all(m.body["resumed_from"] == {"done": m.body["n"]} for m in messages)
        assert all(H.CURSOR not in m.headers for m in messages)
        assert await worker.rt.store.count_trash() == 0

        await run_manual(worker.rt, "explode", user="shop-1", body={"count": 1})
        # the emitted item has no "explode" flag; replay-free check of trash uses a poisoned item:
        poisoned = await worker.rt.send(worker.rt.topics.node("test-explode"), _poison_for(worker, explode))
        await poisoned
        await _eventually(lambda: worker.rt.store.count_trash(), 1)
        [entry] = await worker.rt.store.list_trash()
        assert entry.error_message == "asked to explode"
        assert entry.node_name == "test-explode"
        assert entry.topology_name == "explode"
        assert entry.body == {"explode": True}
        assert H.CURSOR not in entry.headers

        # a node that stopped part-way: the trashed message says where a replay starts
        await worker.rt.store.remove_trash(entry.id or 0)
        part_way = await worker.rt.send(
            worker.rt.topics.node("test-explode"), _poison_for(worker, explode, {"stop_after": 2})
        )
        await part_way
        await _eventually(lambda: worker.rt.store.count_trash(), 1)
        [entry] = await worker.rt.store.list_trash()
        assert (entry.error_message, entry.http_status) == ("stopped part-way", 422)
        assert json.loads(entry.headers[H.CURSOR]) == {"done": 2}
        assert json.loads(replay_message(entry).headers[H.CURSOR]) == {"done": 2}
    finally:
        await worker.stop()


async def test_an_output_too_large_for_the_broker_sends_its_input_to_trash(worker_settings: Settings) -> None:
    """Sent again and again, it would hold up its input, and every input sharing its ledger batch,
    for good; the input goes to trash with the size, and the node goes on with the next one."""
    sink = f"{worker_settings.kafka_topic_prefix}.big"
    worker = Worker(worker_settings, node_names=NODES)
    big = parse_topology(topology("big", sink, options="{pad: 1100000}"), registry=worker.registry)
    small = parse_topology(topology("small", sink), registry=worker.registry)
    big_retry = parse_topology(
        topology("big-retry", sink, "test-flaky-once", options="{resume_pad: 1100000}"), registry=worker.registry
    )
    await worker.start(deploy=[big, small, big_retry])
    try:
        await run_manual(worker.rt, "big", user="shop-1", body={"count": 1})
        await _eventually(lambda: worker.rt.store.count_trash(), 1)
        [entry] = await worker.rt.store.list_trash()
        assert (entry.error_class, entry.node_name) == ("OutputTooLarge", "test-passthrough")
        assert entry.topology_name == "big"
        assert entry.error_message.startswith(f"an output to {sink} is ")
        assert entry.body == {"n": 0}

        await run_manual(worker.rt, "small", user="shop-1", body={"count": 3})
        messages = await SinkReader(worker_settings.kafka_bootstrap_servers, sink).collect_until(
            lambda ms: len(distinct_items(ms)) >= 3
        )
        assert distinct_items(messages) == {0, 1, 2}

        # a retry whose resume point makes it too large: to trash as well, not resent forever
        await worker.rt.store.remove_trash(entry.id or 0)
        await run_manual(worker.rt, "big-retry", user="shop-1", body={"count": 1})
        await _eventually(lambda: worker.rt.store.count_trash(), 1)
        [entry] = await worker.rt.store.list_trash()
        assert (entry.node_name, entry.topology_name) == ("test-flaky-once", "big-retry")
        assert entry.error_message.startswith("first attempt fails (an output to ")
        assert entry.error_message.endswith(f"; the broker takes {MAX_RECORD_BYTES})")
    finally:
        await worker.stop()


async def test_an_ordered_node_retries_in_place_so_a_later_message_never_overtakes(
    worker_settings: Settings,
) -> None:
    """Through the retry topic, item 0 of a shop would be applied after its items 1 and 2 (an older
    status overwriting a newer one); an ordered node retries it in place, holding 1 and 2 back."""
    from tests.runtime import sample_nodes

    sample_nodes.ordered_done.clear()
    sink = f"{worker_settings.kafka_topic_prefix}.ordered"
    worker = Worker(worker_settings, node_names=["test-emit-items", "test-ordered-flaky-once"])
    tv = parse_topology(topology("ordered", sink, "test-ordered-flaky-once"), registry=worker.registry)
    await worker.start(deploy=[tv])
    try:
        await run_manual(worker.rt, "ordered", user="shop-1", body={"count": 3})
        messages = await SinkReader(worker_settings.kafka_bootstrap_servers, sink).collect_until(
            lambda ms: len(distinct_items(ms)) >= 3
        )
        assert distinct_items(messages) == {0, 1, 2}
        assert sample_nodes.ordered_done == [0, 1, 2]
        assert [m.body["n"] for m in messages] == [0, 1, 2]  # one key, one partition: in the order sent
        assert await worker.rt.store.count_trash() == 0
    finally:
        await worker.stop()


async def test_an_ordered_node_that_keeps_failing_part_way_goes_to_trash_after_its_retries(
    worker_settings: Settings,
) -> None:
    """Each attempt runs with the hop counted and the resume point of the one before (through the
    retry topic, which keeps it); past max hops the message goes to trash saying so, with where a
    replay would resume."""
    from tests.runtime import sample_nodes

    sample_nodes.attempts_seen.clear()
    worker = Worker(worker_settings, node_names=["test-emit-items", "test-ordered-always-fails"])
    source = topology("failing", f"{worker_settings.kafka_topic_prefix}.failing", "test-ordered-always-fails")
    tv = parse_topology(source.replace("max_hops: 3", "max_hops: 2"), registry=worker.registry)
    await worker.start(deploy=[tv])
    try:
        await run_manual(worker.rt, "failing", user="shop-1", body={"count": 1})
        await _eventually(lambda: worker.rt.store.count_trash(), 1)
        [entry] = await worker.rt.store.list_trash()
        assert entry.error_message == "still failing (gave up after 2 retries)"
        assert json.loads(entry.headers[H.CURSOR]) == {"attempt": 3}
        assert sample_nodes.attempts_seen == [0, 1, 2]
    finally:
        await worker.stop()


def _poison_for(worker: Worker, tv: object, body: object = None) -> object:
    from worker.envelope import Message
    from worker.router import start_headers

    headers = start_headers(tv, "mid", user="shop-1", application=None)  # type: ignore[arg-type]
    return Message(body={"explode": True} if body is None else body, headers=headers)


async def _eventually(probe: object, expected: int, timeout: float = 30.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe() == expected:  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"expected {expected}, last {await probe()}")  # type: ignore[operator]


async def test_malformed_record_goes_to_trash_and_the_consumer_keeps_going(worker_settings: Settings) -> None:
    sink = f"{worker_settings.kafka_topic_prefix}.out"
    worker = Worker(worker_settings, node_names=NODES[:2])
    tv = parse_topology(topology("malformed", sink), registry=worker.registry)
    await worker.start(deploy=[tv])
    try:
        topic = worker.rt.topics.node("test-passthrough")
        await worker.rt.producer.send_and_wait(topic, b"{not json", key=b"shop-1")
        await worker.rt.producer.send_and_wait(topic, b'{"n": 1}', key=b"shop-1", headers=[("user", b"shop-1")])
        await run_manual(worker.rt, "malformed", user="shop-1", body={"count": 5})
        messages = await SinkReader(worker_settings.kafka_bootstrap_servers, sink).collect_until(
            lambda ms: len(distinct_items(ms)) >= 5
        )
        assert distinct_items(messages) == set(range(5))
        await _eventually(lambda: worker.rt.store.count_trash(), 2)
        reasons = sorted(e.error_message for e in await worker.rt.store.list_trash())
        assert reasons[0].startswith("missing header(s): correlation-id")
        assert reasons[1].startswith("missing header(s): correlation-id")
        raw = [e.raw_body for e in await worker.rt.store.list_trash()]
        assert "{not json" in raw
    finally:
        await worker.stop()


ITEMS = 10_000


async def test_killed_worker_loses_nothing_after_restart(worker_settings: Settings, tmp_path: Path) -> None:
    """SIGKILL in the middle of a 10,000-item fan-out, restart: every item reaches the sink."""
    sink = f"{worker_settings.kafka_topic_prefix}.out"
    file = tmp_path / "crash.yaml"
    file.write_text(topology("crash", sink, options="{delay: 0.002}"))
    env = settings_env(worker_settings)
    first = spawn_worker(env, file, NODES[:2])
    try:
        await wait_ready(first)
        async with control_client(worker_settings) as control:  # like `shoptet-worker run`: no consumer group
            await run_manual(control, "crash", user="shop-1", body={"count": ITEMS, "per_page": 1000})
        reader = SinkReader(worker_settings.kafka_bootstrap_servers, sink)
        await reader.collect_until(lambda ms: len(ms) >= 1500)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        seen_before_restart = len(distinct_items(reader.messages))
        assert seen_before_restart < ITEMS, "the crash came too late to test anything"
        second = spawn_worker(env, file, NODES[:2])
        try:
            await wait_ready(second)
            await reader.collect_until(lambda ms: len(distinct_items(ms)) >= ITEMS, timeout=240)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
    counts = collections.Counter(int(m.body["n"]) for m in reader.messages)
    assert set(counts) == set(range(ITEMS))
    duplicates = sum(c - 1 for c in counts.values())
    print(f"delivered {len(reader.messages)} for {ITEMS} items after SIGKILL: {duplicates} duplicate(s), none missing")


async def test_sigterm_finishes_in_flight_and_restart_has_no_duplicates(
    worker_settings: Settings, tmp_path: Path
) -> None:
    sink = f"{worker_settings.kafka_topic_prefix}.out"
    file = tmp_path / "graceful.yaml"
    file.write_text(topology("graceful", sink, options="{delay: 0.3}"))
    env = settings_env(worker_settings)
    first = spawn_worker(env, file, NODES[:2])
    try:
        await wait_ready(first)
        async with control_client(worker_settings) as control:
            await run_manual(control, "graceful", user="shop-1", body={"count": 300})
        reader = SinkReader(worker_settings.kafka_bootstrap_servers, sink)
        await reader.collect_until(lambda ms: len(ms) >= 20)
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        assert first.stdout is not None and first.stdout.read().strip() == "STOPPED"
        assert len(distinct_items(reader.messages)) < 300, "the stop came too late to test anything"
    finally:
        if first.poll() is None:
            first.kill()
    second = spawn_worker(env, file, NODES[:2])
    try:
        await wait_ready(second)
        await reader.collect_until(lambda ms: len(distinct_items(ms)) >= 300, timeout=120)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    counts = collections.Counter(int(m.body["n"]) for m in await reader.read_all())
    assert set(counts) == set(range(300))
    assert max(counts.values()) == 1, f"duplicates after a graceful stop: {[n for n, c in counts.items() if c > 1]}"


async def finished_event(
    settings: Settings, topology_name: str, nodes: list[str], middle: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Run one process of ``topology(topology_name, ..., middle)``; its ``process finished`` event."""
    sink = f"{settings.kafka_topic_prefix}.out"
    worker = Worker(settings, node_names=nodes)
    tv = parse_topology(topology(topology_name, sink, middle), registry=worker.registry)
    await worker.start(deploy=[tv])
    try:
        start = await run_manual(worker.rt, topology_name, user="shop-2", body=body)
        events = await SinkReader(settings.kafka_bootstrap_servers, worker.rt.topics.process_events).collect_until(
            lambda ms: any(m.body.get("root") == start.process_id for m in ms), timeout=60
        )
    finally:
        await worker.stop()
    [event] = [m.body for m in events if m.body["root"] == start.process_id]
    return event


async def test_process_finished_event_carries_the_counts(worker_settings: Settings) -> None:
    event = await finished_event(worker_settings, "counted", NODES, "test-flaky-once", {"count": 30, "per_page": 10})
    assert event["event"] == "process finished"
    assert event["topology"] == "counted"
    assert event["emitted"] == 30
    assert event["delivered"] == 30  # every item reached the sink
    assert event["retries"] == 30  # test-flaky-once fails each item once
    assert event["trashed"] == 0
    assert event["in_flight"] == 0
    assert event["handled"] == 3 + 30 * 2  # three batch hops, each item twice (fail, then pass)


async def test_a_process_is_not_finished_while_its_batch_still_runs(worker_settings: Settings) -> None:
    """The batch's one item ends its branch at once while the batch hop runs on. The batch's
    outputs were counted only when its hop ended, so for the tracker nothing was in flight and the
    process was announced finished, with half its counts, seconds before it was."""
    body = {"count": 1, "then_wait": 5}
    event = await finished_event(worker_settings, "slow-batch", NODES[:2], "test-passthrough", body)
    assert (event["handled"], event["emitted"], event["delivered"]) == (2, 1, 1)
