"""shoptet-get-eshop-info: the e-shop's settings with order statuses, payment and shipping methods."""

from __future__ import annotations

from nodes.shoptet import data_of
from worker.envelope import Message
from worker.node import Connector, NodeContext, Result

INCLUDE = "orderStatuses,paymentMethods,shippingMethods"


class ShoptetGetEshopInfo(Connector):
    """Output: ``data``. Reference data only, so it also runs for a disabled (suspended) install."""

    name = "shoptet-get-eshop-info"
    accepts_disabled_install = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        envelope = await ctx.require_shoptet().request("GET", "/api/eshop", params={"include": INCLUDE})
        return Result(body=data_of(envelope))
