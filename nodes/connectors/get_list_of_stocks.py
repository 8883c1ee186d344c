"""shoptet-get-list-of-stocks: the e-shop's stocks and its default stock id."""

from __future__ import annotations

from nodes.shoptet import data_of
from worker.envelope import Message
from worker.node import Connector, NodeContext, Result


class ShoptetGetListOfStocks(Connector):
    """Output: ``data`` = ``{stocks[], defaultStockId}``; runs for a disabled install too."""

    name = "shoptet-get-list-of-stocks"
    accepts_disabled_install = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        envelope = await ctx.require_shoptet().request("GET", "/api/stocks")
        return Result(body=data_of(envelope))
