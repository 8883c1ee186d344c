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

    Fix: Orchesty set the change-feed watermark here, when Shoptet accepted the job. A job that
    then failed, or whose ``job:finished`` never came, left the window before it in neither the
    snapshot nor the change feed: those changes were lost. The watermark now moves only when the
    job has completed (shoptet-job-finished-webhook, to the job's creation time); until then the
    next change poll starts where it did, and lists some orders twice rather than none.
    """

    path: ClassVar[str]
    watermark_key: ClassVar[str]
    include: ClassVar[str | None] = None

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        install = ctx.require_install()
        body = shoptet.parse_body(SnapshotInput, message.body, self.name)
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
        return Result(body=job)
