"""An ordered node's retry waits in place, and gives its record up if its partition moves."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from worker import processor as processor_module
from worker.consumer import RecordAbandoned
from worker.envelope import H, Message
from worker.errors import RetryableError
from worker.node import Connector, NodeContext, Result
from worker.processes import HandledTally
from worker.processor import Delivery, NodeProcessor
from worker.topics import TopicNames
from worker.topology import NodeSpec, RetrySpec


class Writer(Connector):
    name = "test-writer"
    ordered = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        return Result()


@pytest.fixture
def processor(monkeypatch: pytest.MonkeyPatch) -> NodeProcessor:
    monkeypatch.setattr(processor_module, "IN_PLACE_CHECK_SECONDS", 0.01)
    settings = SimpleNamespace(default_retry_max_hops=10, default_retry_interval_seconds=1.0)
    runtime: Any = SimpleNamespace(topics=TopicNames("t"), metrics=None, settings=settings)
    return NodeProcessor(runtime, Writer())


MESSAGE = Message(body={"id": 1}, headers={H.PROCESS_ID: "p1"})


def in_place(
    processor: NodeProcessor, message: Message, spec: NodeSpec, error: RetryableError, delivery: Delivery | None = None
) -> Any:
    return processor._retry_in_place(message, spec, error, 0, delivery or Delivery(processor.rt))


async def test_the_retry_waits_its_backoff_and_counts_the_hop(processor: NodeProcessor) -> None:
    spec = NodeSpec(node="test-writer", retry=RetrySpec(interval=0.05, max_hops=3))
    error = RetryableError("503")

    delivery = Delivery(processor.rt)
    again = await asyncio.wait_for(in_place(processor, MESSAGE, spec, error, delivery), 5)

    assert again is not None and again.hops == 1
    # counted in the ledger as a retry (status showed none for ordered writers)
    tally = HandledTally.of(again, outcome="ok", node_outputs=0, sink_outputs=0, emitted=0, retried_in_place=1)
    assert delivery.retried_in_place == 1 and tally.retries == 1
    spent = MESSAGE.with_headers(repeat_hops="3")
    assert await in_place(processor, spent, spec, error) is None  # retry() sends it to trash


async def test_a_rebalance_while_waiting_gives_the_record_up(processor: NodeProcessor) -> None:
    spec = NodeSpec(node="test-writer", retry=RetrySpec(interval=60, max_hops=3))
    waiting = asyncio.create_task(in_place(processor, MESSAGE, spec, RetryableError("503")))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    processor.feed.generation = 1  # the partition was revoked: its next owner reads the record again
    with pytest.raises(RecordAbandoned):
        await asyncio.wait_for(waiting, 1)


async def test_not_in_place_for_a_node_that_is_not_ordered_or_has_sent_outputs(processor: NodeProcessor) -> None:
    """A batch that emitted before failing goes through the retry topic: given up while waiting,
    its items would be out without their count in the process ledger."""
    spec = NodeSpec(node="test-writer", retry=RetrySpec(interval=0.01))
    emitted = Delivery(processor.rt)
    emitted.node_outputs = 2
    assert await in_place(processor, MESSAGE, spec, RetryableError("503"), emitted) is None
    processor.feed.ordered = False
    assert await in_place(processor, MESSAGE, spec, RetryableError("503")) is None


async def test_an_ordered_node_waits_in_place_for_a_deploy_it_has_not_read_yet(processor: NodeProcessor) -> None:
    """Sent to the retry topic, the message of an unknown version let the install's next one go
    first: an older status update landed after a newer one during a deploy."""
    known: dict[tuple[str, str], Any] = {}
    processor.rt.catalog = SimpleNamespace(get=lambda name, version: known.get((name, version)))
    waiting = asyncio.create_task(processor._await_version("sync", "v2"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    known[("sync", "v2")] = deployed = object()
    assert await asyncio.wait_for(waiting, 1) is deployed

    waiting = asyncio.create_task(processor._await_version("sync", "v3"))
    await asyncio.sleep(0.05)
    processor.feed.generation += 1  # rebalanced: its next owner reads it again
    with pytest.raises(RecordAbandoned):
        await asyncio.wait_for(waiting, 1)


async def test_a_node_that_stopped_part_way_retries_through_the_retry_topic(processor: NodeProcessor) -> None:
    """Stock movements failed after their first 300 items went through: held here, their resume
    point lived only in this runner, and a rebalance gave the original record (no cursor) to the
    partition's next owner, which sent the first 300 relative changes again."""
    spec = NodeSpec(node="test-writer", retry=RetrySpec(interval=0.01, max_hops=3))
    assert await in_place(processor, MESSAGE, spec, RetryableError("503", resume={"sent": 300})) is None
