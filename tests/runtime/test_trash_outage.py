"""A trash row the store cannot take yet is waited for: the node is not run again meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from worker import processor as processor_module
from worker.consumer import RecordAbandoned
from worker.envelope import Message
from worker.errors import StopError, StoreUnavailable
from worker.node import Connector, NodeContext, Result
from worker.processor import NodeProcessor
from worker.topics import TopicNames
from worker.topology import parse_topology

TOPOLOGY = """\
name: stock
start: [{manual: true}]
nodes:
  w: {node: test-two-chunks, next: [out]}
  out: {sink: test.out}
"""


class TwoChunks(Connector):
    """Sends chunk 1 (a relative stock change), then Shoptet refuses chunk 2."""

    name = "test-two-chunks"
    needs_install = False
    ordered = True

    def __init__(self) -> None:
        self.applied = 0

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        if not (message.cursor or {}).get("sent"):
            self.applied += 1
        raise StopError("chunk 2: 422", status=422, resume={"sent": 1})


def setup(fails: int) -> tuple[NodeProcessor, TwoChunks, list[Any], ConsumerRecord[bytes, bytes]]:
    tv = parse_topology(TOPOLOGY)
    rows: list[Any] = []
    left = [fails]

    async def add_trash(entry: Any) -> int:
        if left[0]:
            left[0] -= 1
            raise StoreUnavailable("install store unavailable: ConnectionRefusedError")
        rows.append(entry)
        return len(rows)

    def ledger_add(tally: Any, outputs: Any = ()) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    runtime: Any = SimpleNamespace(
        topics=TopicNames("t"),
        metrics=None,
        catalog=SimpleNamespace(get=lambda name, version: tv, webhook_events=lambda *a: frozenset()),
        store=SimpleNamespace(add_trash=add_trash),
        settings=SimpleNamespace(default_retry_max_hops=3, default_retry_interval_seconds=0.01),
        ledger=SimpleNamespace(add=ledger_add),
    )
    node = TwoChunks()
    processor = NodeProcessor(runtime, node)
    headers = {
        "correlation-id": "c",
        "process-id": "p",
        "topology-name": "stock",
        "topology-version": tv.version,
        "node-id": "w",
        "user": "shop",
    }
    record = ConsumerRecord(
        "t.node.test-two-chunks",
        0,
        0,
        0,
        0,
        b"shop",
        b"{}",
        None,
        4,
        2,
        tuple((k, v.encode()) for k, v in headers.items()),
    )
    return processor, node, rows, record


async def test_the_node_runs_once_and_its_resume_point_reaches_trash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raised out of the handler, the outage made the consumer run the node again on the record:
    chunk 1, a relative change already applied, was sent to Shoptet again on every attempt."""
    monkeypatch.setattr(processor_module, "TRASH_RETRY_FIRST_SECONDS", 0.01)
    processor, node, rows, record = setup(fails=3)

    recorded = await asyncio.wait_for(processor.handle(record), 5)

    assert recorded is not None
    assert node.applied == 1
    assert [(r.error_class, r.headers["cursor"]) for r in rows] == [("StopError", '{"sent":1}')]


async def test_a_rebalance_during_the_outage_gives_the_record_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processor_module, "TRASH_RETRY_FIRST_SECONDS", 5.0)
    monkeypatch.setattr(processor_module, "IN_PLACE_CHECK_SECONDS", 0.01)
    processor, _, rows, record = setup(fails=100)
    handling = asyncio.create_task(processor.handle(record))
    await asyncio.sleep(0.05)
    processor.feed.generation += 1
    with pytest.raises(RecordAbandoned):
        await asyncio.wait_for(handling, 1)
    assert rows == []


async def test_a_malformed_record_naming_its_process_ends_its_hop_in_the_ledger() -> None:
    """Counted in flight when it was sent and never counted handled, its process stayed running for
    good (and a replay of the entry, counted in flight again, could not end it either)."""
    processor, node, rows, record = setup(fails=0)
    tallies: list[Any] = []

    def ledger_add(tally: Any, outputs: Any = ()) -> asyncio.Future[None]:
        tallies.append(tally)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    processor.rt.ledger = SimpleNamespace(add=ledger_add)
    malformed = dataclasses.replace(record, value=b"{not json")

    recorded = await asyncio.wait_for(processor.handle(malformed), 5)

    assert recorded is not None and node.applied == 0
    [entry] = rows
    assert entry.error_class == "MalformedMessage"
    [tally] = tallies
    assert (tally.root, tally.handled, tally.trashed) == ("p", 1, 1)
