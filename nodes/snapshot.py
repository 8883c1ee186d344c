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

    Fix: Orchesty set the change-feed watermark here, when Shoptet accepted the job, and again
    when it finished. A filtered snapshot holds only what was *created* since T, so a change to an
    older order before the job was in neither the snapshot nor the change feed; and a job that
    failed, or whose ``job:finished`` never came, lost its whole window. Only a full export (no T)
    may let the change feed skip ahead: its job id is recorded here, and
    shoptet-job-finished-webhook moves the watermark (forward only) when that job has completed.
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
        job_id = shoptet.data_of(envelope, "jobId")
        if since is None:
            await ctx.store.set_setting(install.user, install.application, shoptet.FULL_SNAPSHOT_JOB[self.path], job_id)
        return Result(body=job)
