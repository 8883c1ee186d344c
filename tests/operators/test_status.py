"""``shoptet-worker status`` against a real broker, on ledger records written the way the runtime
writes them (``start_record``, ``HandledTally`` records in the root process id's partition)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from worker.cli import app
from worker.cli.status import watch_ledger
from worker.envelope import H, Message
from worker.kafka import ensure_topics, make_producer
from worker.processes import HandledTally, handled_record, start_record
from worker.router import route, start_headers
from worker.settings import Settings
from worker.topics import TopicNames
from worker.topology import TopologyVersion, load_topology_file

TOPOLOGY = Path(__file__).parents[2] / "topology"
runner = CliRunner()


def _start(tv: TopologyVersion, user: str) -> Message:
    return Message(body={}, headers=start_headers(tv, tv.topology.first_node, user=user, application=None))


def _follower(tv: TopologyVersion, message: Message) -> Message:
    """The message the router sends to the start node's first follower (a batch item)."""
    node_id = message.headers[H.NODE_ID]
    return route(TopicNames(), tv, node_id, message, {"code": "1"}, new_process=True)[0].message


async def _write_ledger(settings: Settings, records: list[dict[str, Any]]) -> None:
    topic = TopicNames(settings.kafka_topic_prefix).processes
    await ensure_topics(settings, settings.kafka_bootstrap_servers, [topic])
    producer = make_producer(settings, settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for record in records:  # as worker.starter / worker.ledger send them, in the root's partition
            root = record["rows"][0][0] if "rows" in record else record["root"]
            ledger = Message(body=record).with_key(root)
            await producer.send_and_wait(topic, ledger.encode_body(), key=ledger.key(), headers=ledger.kafka_headers())
    finally:
        await producer.stop()


def _scenario() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A: batch emitted 3 items, 2 reached the sink, 1 is retrying. B: finished. C: just started."""
    imp = load_topology_file(TOPOLOGY / "order-import.yaml")
    status = load_topology_file(TOPOLOGY / "order-status-update.yaml")
    a, b = _start(imp, "shop-a"), _start(status, "shop-b")
    items = [_follower(imp, a) for _ in range(3)]
    records = [
        start_record(a),
        handled_record([HandledTally.of(a, outcome="ok", node_outputs=3, sink_outputs=0, emitted=3)]),
        handled_record([HandledTally.of(items[0], outcome="ok", node_outputs=0, sink_outputs=1, emitted=0)]),
        handled_record([HandledTally.of(items[1], outcome="ok", node_outputs=0, sink_outputs=1, emitted=0)]),
        handled_record([HandledTally.of(items[2], outcome="retry", node_outputs=1, sink_outputs=0, emitted=0)]),
        start_record(b),
        handled_record([HandledTally.of(b, outcome="ok", node_outputs=0, sink_outputs=0, emitted=0)]),
    ]
    records.append({"kind": "finished", "root": b.process_id, "at": records[-1]["at"] + 2})
    d = _start(status, "shop-d")  # finished with its message in trash
    records.append(start_record(d))
    records.append(handled_record([HandledTally.of(d, outcome="trash", node_outputs=0, sink_outputs=0, emitted=0)]))
    records.append({"kind": "finished", "root": d.process_id, "at": records[-1]["at"] + 1})
    c = _start(imp, "shop-c")
    records.append(start_record(c))
    return records, {"a": a.process_id, "b": b.process_id, "c": c.process_id, "d": d.process_id}


async def _status(env: dict[str, str], *args: str) -> Any:
    result = await asyncio.to_thread(runner.invoke, app, ["status", *args], env=env)
    assert result.exit_code == 0, result.output
    return result


async def test_status_json_counts_progress_and_order(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic_prefix=topic_prefix, kafka_partitions=3)
    records, roots = _scenario()
    await _write_ledger(settings, records)
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC_PREFIX": topic_prefix, "COLUMNS": "200"}

    listed = json.loads((await _status(env, "--json")).stdout)

    by_root = {p["root"]: p for p in listed}
    # running newest first, then finished, most recently finished first
    assert [p["root"] for p in listed] == [roots["c"], roots["a"], roots["b"], roots["d"]]
    a = by_root[roots["a"]]
    assert (a["topology"], a["user"], a["state"]) == ("order-import", "shop-a", "running")
    counts = {k: a[k] for k in ("emitted", "done", "delivered", "retries", "trashed", "in_flight")}
    assert counts == {"emitted": 3, "done": 2, "delivered": 2, "retries": 1, "trashed": 0, "in_flight": 1}
    assert a["progress"] == round(2 / 3, 4)
    b = by_root[roots["b"]]
    assert (b["topology"], b["user"], b["state"], b["progress"]) == ("order-status-update", "shop-b", "finished", 1.0)
    assert b["finished_at"] is not None and b["duration_seconds"] >= 2
    c = by_root[roots["c"]]
    assert (c["state"], c["progress"], c["in_flight"]) == ("running", None, 1)
    d = by_root[roots["d"]]
    assert (d["state"], d["trashed"]) == ("failed", 1)  # it showed "finished", in green
    assert all(p["age_seconds"] >= 0 for p in listed)

    assert [p["root"] for p in json.loads((await _status(env, "--json", "--limit", "1")).stdout)] == [roots["c"]]

    table = (await _status(env)).stdout
    for text in (
        "order-import",
        "order-status-update",
        "shop-a",
        "shop-b",
        "2/3",
        "finished",
        "failed",
        roots["a"][:12],
    ):
        assert text in table


async def test_status_without_ledger_and_without_broker(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC_PREFIX": topic_prefix}
    assert json.loads((await _status(env, "--json")).stdout) == []

    monkeypatch.chdir(tmp_path)  # no var/worker.json from a local `up`, no .env
    env["KAFKA_BOOTSTRAP_SERVERS"] = ""
    missing = await asyncio.to_thread(runner.invoke, app, ["status"], env=env)
    assert missing.exit_code == 2 and "KAFKA_BOOTSTRAP_SERVERS" in missing.output


async def test_watch_follows_records_written_after_it_started(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic_prefix=topic_prefix, kafka_partitions=3)
    records, roots = _scenario()
    await ensure_topics(settings, kafka_bootstrap, [TopicNames(topic_prefix).processes])
    console = Console(file=io.StringIO(), width=200, record=True)
    watching = asyncio.create_task(watch_ledger(settings, 10, 0.5, console, ticks=12))
    await asyncio.sleep(1.0)
    await _write_ledger(settings, records)
    await watching
    shown = console.export_text()
    assert roots["a"][:12] in shown and roots["c"][:12] in shown and "2/3" in shown


async def test_watch_before_any_worker_creates_the_ledger_as_a_worker_would(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Subscribed to before it existed, the ledger was made by the broker with its own default
    partitions, which the workers then kept: KAFKA_PARTITIONS ignored, one tracker for all."""
    from aiokafka.admin import AIOKafkaAdminClient

    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic_prefix=topic_prefix, kafka_partitions=5)
    console = Console(file=io.StringIO(), width=200)
    await watch_ledger(settings, 10, 0.2, console, ticks=2)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([TopicNames(topic_prefix).processes])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 5
