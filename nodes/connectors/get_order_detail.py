"""shoptet-get-order-detail: one order with shipping details, notes and surcharge parameters."""

from __future__ import annotations

from pydantic import model_validator

from nodes.shoptet import EntityRef, data_of, get_unless_deleted, parse_body, path_segment
from worker.envelope import Message, ResultCode
from worker.node import Connector, NodeContext, NoOptions, Result

INCLUDE = "shippingDetails,notes,surchargeParameters"


class OrderRef(EntityRef):
    """``{code}`` (a change-list item, an orders-list item) or an order webhook payload.

    An ``order:*`` webhook's ``eventInstance`` is the order code, so a process can start this node
    straight from a webhook: ``{eshopId, event, eventCreated, eventInstance}`` works as input too.
    """

    code: str | None = None

    @model_validator(mode="after")
    def _has_code(self) -> OrderRef:
        if not (self.code or self.eventInstance):
            raise ValueError("needs `code` (or a webhook payload with `eventInstance`)")
        return self

    @property
    def order_code(self) -> str:
        return self.code or self.eventInstance or ""


class ShoptetGetOrderDetail(Connector):
    """Output: ``data.order``. An unknown order code is Shoptet's 404: stop (trash). A deleted
    order (``changeType: delete``, ``order:delete``, or a 404 for a change or webhook) is 1003:
    nothing to publish, and nothing for an operator to clear."""

    name = "shoptet-get-order-detail"
    Options = NoOptions

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        ref = parse_body(OrderRef, message.body, self.name)
        path = f"/api/orders/{path_segment(ref.order_code)}"
        envelope = await get_unless_deleted(ctx.require_shoptet(), path, ref, params={"include": INCLUDE})
        if envelope is None:
            return Result(code=ResultCode.DO_NOT_CONTINUE, message=f"order {ref.order_code} is deleted in Shoptet")
        return Result(body=data_of(envelope, "order"))
