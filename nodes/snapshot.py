"""Shared start of a snapshot job (``/api/orders/snapshot``, ``/api/products/snapshot``).

Shoptet answers 202 ``{jobId}`` and later calls the ``job:finished`` webhook; the job's result is a
gzipped JSON Lines file (see shoptet-job-finished-webhook and shoptet-parse-json-lines).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from nodes import shoptet
from worker.envelope import Message
from worker.node import Connector, NodeContext, Result


class SnapshotInput(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    from_: str | None = Field(default=None, alias="from")


class SnapshotConnector(Connector):
    """T = input ``from``, else the change-feed watermark (minus 60 s); none lists everything.

    After Shoptet accepted the job, the change-feed watermark is set to the time the job was
    requested, so the next change poll lists only what changed after the snapshot began.
    """

    path: ClassVar[str]
    watermark_key: ClassVar[str]
    include: ClassVar[str | None] = None

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        install = ctx.require_install()
        body = shoptet.parse_body(SnapshotInput, message.body, self.name)
        requested_at = shoptet.format_time(shoptet.utcnow())
        since = shoptet.normalize_time(body.from_) if body.from_ else None
        since = since or shoptet.watermark_start(install, self.watermark_key)
        params: dict[str, Any] = {}
        if self.include:
            params["include"] = self.include
        if since:
            params["creationTimeFrom"] = since
        envelope = await ctx.require_shoptet().request("GET", self.path, params=params)
        job = shoptet.data_of(envelope)
        shoptet.data_of(envelope, "jobId")
        await shoptet.save_watermark(ctx, self.watermark_key, requested_at)
        return Result(body=job)
