"""A custom node whose constructor fails where its setting is missing (as ``os.environ[...]`` does)."""

from __future__ import annotations

from worker.envelope import Message
from worker.node import Connector, NodeContext, Result


class NeedsErp(Connector):
    name = "test-needs-erp"
    needs_install = False

    def __init__(self) -> None:
        raise KeyError("ERP_URL")

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        return Result(body=message.body)
