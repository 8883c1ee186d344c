"""A list batch's retries: the hops a retry counts start over once an attempt got further."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from nodes.batches.orders_list import ShoptetGetOrdersList
from nodes.connectors.update_stock_movements import ShoptetUpdateStockMovements
from worker.envelope import H, Message
from worker.errors import RetryableError
from worker.node import Node
from worker.processor import Delivery, NodeProcessor
from worker.router import Outgoing
from worker.topics import TopicNames
from worker.topology import NodeSpec, RetrySpec

SPEC = NodeSpec(node="shoptet-get-orders-list", retry=RetrySpec(interval=60, max_hops=10))
RECORD: Any = SimpleNamespace(topic="t.node.shoptet-get-orders-list")


def cursor_at(page: int) -> dict[str, Any]:
    return {"page": page, "dateFrom": None, "startedAt": "2024-05-20T12:00:00Z", "totalCount": 1000}


def processor_of(node: Node) -> NodeProcessor:
    async def send_output(out: Outgoing) -> asyncio.Future[None]:
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sent.set_result(None)
        return sent

    settings = SimpleNamespace(default_retry_max_hops=10, default_retry_interval_seconds=1.0)
    runtime: Any = SimpleNamespace(topics=TopicNames("t"), metrics=None, settings=settings, send_output=send_output)
    return NodeProcessor(runtime, node)


@pytest.fixture
def processor() -> NodeProcessor:
    return processor_of(ShoptetGetOrdersList())


async def retried(processor: NodeProcessor, message: Message, error: RetryableError) -> Message | None:
    """The message ``retry`` scheduled (None: it went to trash)."""
    trashed: list[Any] = []

    async def trash(record: Any, message: Message | None, error: BaseException, **_: Any) -> None:
        trashed.append(record)

    processor.trash = trash  # type: ignore[method-assign]
    delivery = Delivery(processor.rt)
    scheduled = await processor.retry(RECORD, message, SPEC, error, delivery=delivery)
    assert len(trashed) == (0 if scheduled else 1)
    return delivery.pending[0][0].message if scheduled else None


async def test_a_retry_that_got_further_starts_its_hops_over(processor: NodeProcessor) -> None:
    """Counted over the whole run, the tenth 503 of a long listing sent it to trash, although each
    attempt had emitted pages the one before had not."""
    ninth = Message(body={}, headers={H.CURSOR: json.dumps(cursor_at(3)), H.REPEAT_HOPS: "9"})

    again = await retried(processor, ninth, RetryableError("503", resume=cursor_at(7)))

    assert again is not None and again.hops == 1 and again.cursor == cursor_at(7)


async def test_a_retry_stuck_at_the_same_page_counts_its_hops(processor: NodeProcessor) -> None:
    # the header as the harness or another client wrote it: the same cursor, other spacing
    ninth = Message(body={}, headers={H.CURSOR: json.dumps(cursor_at(3)), H.REPEAT_HOPS: "9"})
    again = await retried(processor, ninth, RetryableError("503", resume=cursor_at(3)))
    assert again is not None and again.hops == 10

    assert await retried(processor, again, RetryableError("503", resume=cursor_at(3))) is None
    assert await retried(processor, again, RetryableError("503")) is None  # no resume: no progress


async def test_a_connector_whose_resume_point_changes_still_counts_its_hops() -> None:
    """A connector's resume point need not mean progress: reset on every change, a node that
    changed it on each attempt was retried for ever."""
    ninth = Message(body={}, headers={H.CURSOR: json.dumps({"sent": 300}), H.REPEAT_HOPS: "9"})
    again = await retried(
        processor_of(ShoptetUpdateStockMovements()), ninth, RetryableError("503", resume={"sent": 600})
    )
    assert again is not None and again.hops == 10
