"""``ctx.delivered()`` in a batch: it returns only once the broker has every item emitted so far.

The processor runs on a stand-in runtime whose ``send_output`` hands back acknowledgements the test
settles itself, so the test decides when "the broker" has the items (the stand-in ledger settles
an item's count with them, as the real one does).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from worker.envelope import Message
from worker.node import Batch, Emit, NodeContext, Result
from worker.processor import Delivery, NodeProcessor
from worker.router import Outgoing
from worker.tasks import when_all_done
from worker.topics import TopicNames
from worker.topology import parse_topology


class EmitThenConfirm(Batch):
    """Emits two items, waits for their delivery, then notes that it went on."""

    name = "test-emit-then-confirm"
    needs_install = False

    def __init__(self) -> None:
        self.went_on = asyncio.Event()

    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result:
        await emit({"n": 1})
        await emit({"n": 2})
        await ctx.delivered()
        self.went_on.set()
        return Result()


TOPOLOGY = """
name: confirm
start: [{manual: true}]
nodes:
  batch: {node: test-emit-then-confirm, next: [out]}
  out: {sink: test.confirm.out}
"""


async def test_delivered_waits_for_the_brokers_acknowledgement_of_every_emitted_item() -> None:
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[Any]] = []
    sent: list[Outgoing] = []

    async def send_output(out: Outgoing) -> asyncio.Future[Any]:
        sent.append(out)
        acks.append(loop.create_future())
        return acks[-1]

    def ledger_add(tally: Any, outputs: Any = ()) -> asyncio.Future[None]:
        """The ledger batch that counts an item: done once the broker has the item's outputs."""
        return when_all_done([ack for _, ack in outputs])

    runtime: Any = SimpleNamespace(
        topics=TopicNames("t"), metrics=None, send_output=send_output, ledger=SimpleNamespace(add=ledger_add)
    )
    node = EmitThenConfirm()
    processor = NodeProcessor(runtime, node)
    tv = parse_topology(TOPOLOGY)
    ctx = NodeContext(store=None, settings=None)  # type: ignore[arg-type]  # the node uses neither
    message = Message(body={}, headers={"node-id": "batch"})

    call = asyncio.create_task(processor._call(message, ctx, tv, "batch", Delivery(runtime)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert [out.topic for out in sent] == ["test.confirm.out"] * 2
    assert not node.went_on.is_set()  # both items are still on their way

    acks[0].set_result(None)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not node.went_on.is_set()  # one of them still is

    acks[1].set_result(None)
    await asyncio.wait_for(call, 5)
    assert node.went_on.is_set()
