"""Shared start of a snapshot job (``/api/orders/snapshot``, ``/api/products/snapshot``).

Shoptet answers 202 ``{jobId}`` and later calls the ``job:finished`` webhook; the job's result is a
gzipped JSON Lines file (see shoptet-job-finished-webhook and shoptet-parse-json-lines).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from nodes import shoptet
from worker.envelope import Message
from worker.errors import NodeError, StopError
from worker.node import Connector, NodeContext, NoOptions, Result
from worker.store import Install


class SnapshotInput(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    from_: str | None = Field(default=None, alias="from")


class SnapshotCursor(BaseModel):
    """A retry's ``cursor``: the job an earlier attempt got from Shoptet before it failed."""

    model_config = ConfigDict(extra="ignore")
    jobId: str | None = None


class SnapshotConnector(Connector):
    """T = input ``from``, else the change-feed watermark (minus 60 s); none lists everything.

    Fix: Orchesty set the change-feed watermark here, when Shoptet accepted the job, and again
    when it finished. A filtered snapshot holds only what was *created* since T, so a change to an
    older order before the job was in neither the snapshot nor the change feed; and a job that
    failed, or whose ``job:finished`` never came, lost its whole window. Only a full export (no T)
    may let the change feed skip ahead: its job id is recorded here, and :func:`complete_export`
    moves the watermark (forward only) once that job's whole file has been read.

    A failure after Shoptet accepted the job (recording it, with the store down) keeps the job in
    the retry's cursor: asked again, Shoptet ran a second export and both went to the sink whole.
    """

    Options = NoOptions

    path: ClassVar[str]
    watermark_key: ClassVar[str]
    include: ClassVar[str | None] = None

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        install = ctx.require_install()
        body = shoptet.parse_body(SnapshotInput, message.body, self.name)
        since = shoptet.normalize_time(body.from_) if body.from_ else None
        since = since or shoptet.watermark_start(install, self.watermark_key)
        requested = shoptet.parse_cursor(SnapshotCursor, message, self.name).jobId
        if requested is None:
            params: dict[str, Any] = {}
            if self.include:
                params["include"] = self.include
            if since:
                params["creationTimeFrom"] = since
            envelope = await ctx.require_shoptet().request("GET", self.path, params=params)
            job = shoptet.data_of(envelope)
            requested = str(shoptet.data_of(envelope, "jobId"))
        else:
            job = {"jobId": requested}
        if since is None:
            key = shoptet.FULL_SNAPSHOT_JOB[self.path]
            try:
                await ctx.store.set_setting(install.user, install.application, key, requested)
            except NodeError as exc:
                exc.resume = SnapshotCursor(jobId=requested).model_dump()
                raise
        return Result(body=job)


#: Which change-feed watermark a full export moves forward.
WATERMARK_OF_ENDPOINT = {
    "/api/orders/snapshot": shoptet.LAST_RUN_ORDER_CHANGES,
    "/api/products/snapshot": shoptet.LAST_RUN_PRODUCT_CHANGES,
}


def job_endpoint(job: Mapping[str, Any]) -> str:
    """The job's endpoint as a bare path: matched against ``/api/orders/snapshot`` and the like."""
    return str(job.get("endpoint") or "").split("?", 1)[0]


async def complete_export(ctx: NodeContext, install: Install, job: Mapping[str, Any]) -> None:
    """After a full export's whole file was read, the change feed goes on from the job's creation.

    Only for the job of an unfiltered request (recorded by :class:`SnapshotConnector`): a filtered
    one holds only what was created since its filter. Forward only: the change feed may have gone
    past the job while it ran. The creation time, not the completion time (Orchesty's), so that
    changes made while the job ran are listed again rather than skipped.
    """
    endpoint = job_endpoint(job)
    key = WATERMARK_OF_ENDPOINT.get(endpoint)
    created = job.get("creationTime")
    if not key or not created or job.get("status") != "completed":
        return  # no completion time instead: it would skip the changes made while the job ran
    try:
        when = shoptet.parse_time(str(created))
    except StopError:  # the export is delivered; the feed lists the window again rather than fail it
        ctx.log.warning("snapshot job time not understood; the watermark stays", creation_time=created)
        return
    # read now, not from the message's (cached) install: the job id and the feed's watermark were
    # written since, by the request and by the change poll
    current = await ctx.store.get_install(install.user, install.application) or install
    full = current.settings.get(shoptet.FULL_SNAPSHOT_JOB[endpoint])
    if full is None or str(full) != str(job.get("jobId")):
        return
    stored = current.settings.get(key)
    if stored and shoptet.parse_time(str(stored)) >= when:
        return
    await shoptet.save_watermark(ctx, key, shoptet.format_time(when), install)
