"""shoptet-update-order-status: change an order's status, paid flag or billing method."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from nodes.shoptet import PatchData, not_null, parse_body, path_segment, reported_errors
from worker.envelope import Message
from worker.node import Connector, NodeContext, NoOptions, Result


class StatusData(PatchData):
    """Shoptet's ``data`` for PATCH /api/orders/{code}/status (no other fields are allowed)."""

    statusId: int | None = None
    paid: bool | None = None
    billingMethodId: int | None = None

    _not_null = field_validator("statusId", "billingMethodId", mode="before")(not_null)


class StatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: StatusData


class UpdateOrderStatusInput(BaseModel):
    """``{id, status: {data: {...}}}``: ``id`` is the order code."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)
    id: str
    status: StatusBody


class ShoptetUpdateOrderStatus(Connector):
    """PATCH /api/orders/{id}/status with body = ``status``; output: the input unchanged.

    Codes: 0; 404 (unknown order), 409 and 422 stop (trash); 423/429/5xx repeat. Ordered: the
    updates of one e-shop are applied in the order they were sent.

    A status whose documents (invoice, delivery note) Shoptet failed to generate is still changed:
    Shoptet answers 200 with ``document-not-generated`` errors. The result stays 0 with the input
    unchanged (parity), but the errors are logged and given as the result's message, since nobody
    would learn otherwise that the order has no invoice.
    """

    name = "shoptet-update-order-status"
    Options = NoOptions
    ordered = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        body = parse_body(UpdateOrderStatusInput, message.body, self.name)
        payload = body.status.model_dump(exclude_unset=True)
        path = f"/api/orders/{path_segment(body.id)}/status"
        answer = await ctx.require_shoptet().request("PATCH", path, json=payload)
        problems = reported_errors(answer)
        if not problems:
            return Result(body=message.body)
        ctx.log.warning("order status changed, but Shoptet reported errors", order=body.id, errors=problems)
        return Result(body=message.body, message="; ".join(f"{e['errorCode']}: {e['message']}" for e in problems))
