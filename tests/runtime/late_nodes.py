"""A custom node no worker has loaded at start: a topology's ``imports`` brings it with a deploy."""

from __future__ import annotations

from worker.envelope import Message
from worker.node import Connector, NodeContext, Result


class LateEcho(Connector):
    name = "test-late-echo"
    needs_install = False

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        return Result(body={"echo": message.body})
