"""shoptet-get-product-detail: one product by guid."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from nodes.shoptet import data_of, parse_body, path_segment
from worker.envelope import Message
from worker.node import Connector, NodeContext, Result


class ProductRef(BaseModel):
    """``{guid}`` (a product change or list item) or a product webhook payload (``eventInstance``)."""

    model_config = ConfigDict(extra="ignore")
    guid: str | None = None
    eventInstance: str | None = None

    @model_validator(mode="after")
    def _has_guid(self) -> ProductRef:
        if not (self.guid or self.eventInstance):
            raise ValueError("needs `guid` (or a webhook payload with `eventInstance`)")
        return self

    @property
    def product_guid(self) -> str:
        return self.guid or self.eventInstance or ""


class ShoptetGetProductDetail(Connector):
    """Output: ``data`` (the product). An unknown guid is Shoptet's 404: stop (trash)."""

    name = "shoptet-get-product-detail"

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        ref = parse_body(ProductRef, message.body, self.name)
        envelope = await ctx.require_shoptet().request("GET", f"/api/products/{path_segment(ref.product_guid)}")
        return Result(body=data_of(envelope))
