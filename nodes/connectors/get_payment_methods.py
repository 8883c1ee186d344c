"""shoptet-get-payment-methods: the e-shop's payment methods."""

from __future__ import annotations

from worker.envelope import Message
from worker.node import Connector, NodeContext, NoOptions, Result


class ShoptetGetPaymentMethods(Connector):
    """Output: the WHOLE response body ``{data, errors, ...}``, not just ``data``.

    That is an Orchesty quirk (every other reader outputs ``data``). Processes built for the
    Orchesty connector read ``data.paymentMethods`` from this node's output, so we keep it.
    """

    name = "shoptet-get-payment-methods"
    Options = NoOptions
    #: It only reads, as the other reference readers do (a suspended install still has its data).
    accepts_disabled_install = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        return Result(body=await ctx.require_shoptet().request("GET", "/api/payment-methods"))
