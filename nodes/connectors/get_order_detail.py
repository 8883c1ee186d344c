"""shoptet-get-order-detail: one order with shipping details, notes and surcharge parameters."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from nodes.shoptet import data_of, parse_body, path_segment
from worker.envelope import Message
from worker.node import Connector, NodeContext, Result

INCLUDE = "shippingDetails,notes,surchargeParameters"


class OrderRef(BaseModel):
    """``{code}`` (a change-list item, an orders-list item) or an order webhook payload.

    An ``order:*`` webhook's ``eventInstance`` is the order code, so a process can start this node
    straight from a webhook: ``{eshopId, event, eventCreated, eventInstance}`` works as input too.
    """

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    code: str | None = None
    eventInstance: str | None = None

    @model_validator(mode="after")
    def _has_code(self) -> OrderRef:
        if not (self.code or self.eventInstance):
            raise ValueError("needs `code` (or a webhook payload with `eventInstance`)")
        return self

    @property
    def order_code(self) -> str:
        return self.code or self.eventInstance or ""


class ShoptetGetOrderDetail(Connector):
    """Output: ``data.order``. An unknown order is Shoptet's 404: stop (trash)."""

    name = "shoptet-get-order-detail"

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        ref = parse_body(OrderRef, message.body, self.name)
        envelope = await ctx.require_shoptet().request(
            "GET", f"/api/orders/{path_segment(ref.order_code)}", params={"include": INCLUDE}
        )
        return Result(body=data_of(envelope, "order"))
