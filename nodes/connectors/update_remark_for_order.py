"""shoptet-update-remark-for-order: set an order's tracking number and remarks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nodes.shoptet import PatchData, not_null, parse_body, path_segment
from worker.envelope import Message
from worker.node import Connector, NodeContext, NoOptions, Result


class AdditionalField(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=1, le=6)
    text: str | None


class NotesData(PatchData):
    """Shoptet's ``data`` for PATCH /api/orders/{code}/notes (no other fields are allowed)."""

    trackingNumber: str | None = Field(default=None, max_length=32)
    eshopRemark: str | None = None
    customerRemark: str | None = None
    additionalFields: list[AdditionalField] | None = Field(default=None, min_length=1)

    _not_null = field_validator("additionalFields", mode="before")(not_null)


class NotesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: NotesData


class UpdateRemarkInput(BaseModel):
    """``{id, notes: {data: {trackingNumber?, eshopRemark?, customerRemark?}}}``; id = order code."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)
    id: str
    notes: NotesBody


class ShoptetUpdateRemarkForOrder(Connector):
    """PATCH /api/orders/{id}/notes with body = ``notes``; output: the input unchanged.

    Codes: 0; 404/422 stop (trash); 423/429/5xx repeat. Ordered per e-shop.
    """

    name = "shoptet-update-remark-for-order"
    Options = NoOptions
    ordered = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        body = parse_body(UpdateRemarkInput, message.body, self.name)
        payload = body.notes.model_dump(exclude_unset=True)
        await ctx.require_shoptet().request("PATCH", f"/api/orders/{path_segment(body.id)}/notes", json=payload)
        return Result(body=message.body)
