"""shoptet-get-shipping-methods: the e-shop's shipping methods."""

from __future__ import annotations

from nodes.shoptet import data_of
from worker.envelope import Message
from worker.node import Connector, NodeContext, Result


class ShoptetGetShippingMethods(Connector):
    """Output: ``data``; runs for a disabled install too (reference data only)."""

    name = "shoptet-get-shipping-methods"
    accepts_disabled_install = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        envelope = await ctx.require_shoptet().request("GET", "/api/shipping-methods")
        return Result(body=data_of(envelope))
