"""shoptet-job-finished-webhook: a snapshot job finished; fetch the job and find its install.

This node starts from Shoptet's webhook, which names only the e-shop (``eshopId``), so it has no
install up-front (``needs_install = False``) and looks it up itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from nodes import shoptet
from worker.envelope import Message, ResultCode
from worker.node import Connector, NodeContext, Result
from worker.store import Install

JOB_FINISHED = "job:finished"

#: Which change-feed watermark a finished snapshot moves forward.
WATERMARK_OF_ENDPOINT = {
    "/api/orders/snapshot": shoptet.LAST_RUN_ORDER_CHANGES,
    "/api/products/snapshot": shoptet.LAST_RUN_PRODUCT_CHANGES,
}


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    eshopId: str
    event: str
    eventCreated: str | None = None
    eventInstance: str


class ShoptetJobFinishedWebhook(Connector):
    """Output: ``data.job``. Codes: event other than job:finished -> 1006; unknown eshop -> 1003.

    - The install is found by eshopId AND application (fix: Orchesty matched any application).
      The application is the node's ``application`` option, else the message's ``application``
      header (the topology's), else ``shoptet-premium``.
    - A disabled install (addon suspended) is treated like an unknown one (1003): its token no
      longer works.
    - The output belongs to the found install: the node sets ``ctx.install`` and the runtime stamps
      ``user``/``application`` of the output from it. The client comes from ``ctx.client_factory``.
    - A completed *full* orders/products snapshot (one shoptet-get-all-* requested without a filter)
      moves that change feed's watermark forward to the job's creation time (Orchesty used
      completion time, which skips changes made while the job ran, and moved it for any job). A
      filtered job holds only orders created since its filter, and a job that did not complete
      holds nothing: after either, the change feed must still list the window.
    - Option ``endpoints`` (ours): several processes may start on ``job:finished``; each lists the
      job endpoints it wants (``[/api/orders/snapshot]``) and lets other jobs stop here with 1003.
    """

    name = "shoptet-job-finished-webhook"
    needs_install = False

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        payload = shoptet.parse_body(WebhookPayload, message.body, self.name)
        if payload.event != JOB_FINISHED:
            return Result(code=ResultCode.STOP_AND_FAIL, message=f"Event [event={payload.event}] is not supported")
        application = shoptet.application_for(ctx, message)
        install = await ctx.store.find_by_eshop(payload.eshopId, application)
        if install is None or not install.enabled:
            state = "is not installed" if install is None else "is disabled"
            return Result(
                code=ResultCode.DO_NOT_CONTINUE,
                message=f"Shoptet with eshopId [{payload.eshopId}] {state} for {application}.",
            )
        client = shoptet.client_for(ctx, install)
        envelope = await client.request("GET", f"/api/system/jobs/{shoptet.path_segment(payload.eventInstance)}")
        job = shoptet.data_of(envelope, "job")
        await _move_watermark(ctx, install, job)
        wanted = ctx.options.get("endpoints")
        if wanted and job.get("endpoint") not in wanted:
            return Result(
                code=ResultCode.DO_NOT_CONTINUE,
                body=job,
                message=f"job {job.get('jobId')} of {job.get('endpoint')} is not for this process",
            )
        return Result(body=job, message=f"job {job.get('jobId')} of user {install.user}")


async def _move_watermark(ctx: NodeContext, install: Install, job: dict[str, Any]) -> None:
    """After a completed full export, the change feed goes on from the job's creation time."""
    endpoint = str(job.get("endpoint", ""))
    key = WATERMARK_OF_ENDPOINT.get(endpoint)
    when = job.get("creationTime") or job.get("completionTime")
    full = install.settings.get(shoptet.FULL_SNAPSHOT_JOB.get(endpoint, ""))
    if not key or not when or job.get("status") != "completed":
        return
    if full is None or str(full) != str(job.get("jobId")):
        return  # a filtered export: older orders changed meanwhile are only in the change feed
    stored = install.settings.get(key)
    if stored and shoptet.parse_time(str(stored)) >= shoptet.parse_time(str(when)):
        return  # the change feed already went past it: moving back would list changes again
    await shoptet.save_watermark(ctx, key, shoptet.normalize_time(str(when)), install)
