"""Base of the reference-data readers: one GET, its ``data`` as the output, disabled installs too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from nodes.shoptet import data_of
from worker.envelope import Message
from worker.node import Connector, NodeContext, NoOptions, Result


class ReferenceDataReader(Connector):
    """Reads settings-like data (stocks, shipping methods, e-shop info): nothing that changes an
    order, so it also runs for a disabled (suspended) install. Subclasses name the endpoint."""

    Options = NoOptions

    path: ClassVar[str]
    params: ClassVar[Mapping[str, str] | None] = None
    accepts_disabled_install = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        envelope = await ctx.require_shoptet().request("GET", self.path, params=self.params)
        return Result(body=data_of(envelope))
