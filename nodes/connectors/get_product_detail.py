"""shoptet-get-product-detail: one product by guid."""

from __future__ import annotations

from pydantic import model_validator

from nodes.shoptet import EntityRef, data_of, get_unless_deleted, parse_body, path_segment
from worker.envelope import Message, ResultCode
from worker.node import Connector, NodeContext, NoOptions, Result


class ProductRef(EntityRef):
    """``{guid}`` (a product change or list item) or a product webhook payload (``eventInstance``)."""

    guid: str | None = None

    @model_validator(mode="after")
    def _has_guid(self) -> ProductRef:
        if not (self.guid or self.eventInstance):
            raise ValueError("needs `guid` (or a webhook payload with `eventInstance`)")
        return self

    @property
    def product_guid(self) -> str:
        return self.guid or self.eventInstance or ""


class ShoptetGetProductDetail(Connector):
    """Output: ``data`` (the product). An unknown guid is Shoptet's 404: stop (trash). A deleted
    product (``changeType: delete``, ``product:delete``, or a 404 for a change or webhook) is 1003."""

    name = "shoptet-get-product-detail"
    Options = NoOptions

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        ref = parse_body(ProductRef, message.body, self.name)
        path = f"/api/products/{path_segment(ref.product_guid)}"
        envelope = await get_unless_deleted(ctx.require_shoptet(), path, ref)
        if envelope is None:
            return Result(code=ResultCode.DO_NOT_CONTINUE, message=f"product {ref.product_guid} is deleted in Shoptet")
        return Result(body=data_of(envelope))
