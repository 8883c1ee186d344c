"""shoptet-job-finished-webhook: a snapshot job finished; fetch the job and find its install.

This node starts from Shoptet's webhook, which names only the e-shop (``eshopId``), so it has no
install up-front (``needs_install = False``) and looks it up itself.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from nodes import shoptet
from nodes.options import JobFinishedOptions
from nodes.snapshot import job_endpoint
from worker.envelope import Message, ResultCode
from worker.errors import RetryableError
from worker.node import Connector, NodeContext, Result
from worker.store import Install

JOB_FINISHED = "job:finished"
#: Job statuses before it finished (completed or failed).
UNFINISHED = frozenset({"pending", "running"})


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    eshopId: str
    event: str
    eventCreated: str | None = None
    eventInstance: str


class ShoptetJobFinishedWebhook(Connector):
    """Output: ``data.job``. Codes: event other than job:finished -> 1006; unknown eshop -> 1003.

    - The install is found by eshopId AND application (fix: Orchesty matched any application); the
      message's ``user`` header, set by the ingress, picks it when the e-shop has two.
      The application is the node's ``application`` option, else the message's ``application``
      header (the topology's), else ``shoptet-premium``.
    - A disabled install (addon suspended) is treated like an unknown one (1003): its token no
      longer works.
    - The output belongs to the found install: the node sets ``ctx.install`` and the runtime stamps
      ``user``/``application`` of the output from it. The client comes from ``ctx.client_factory``.
    - Fix: Orchesty moved the change feed's watermark here, for any job. It now moves once
      shoptet-parse-json-lines has read a full export's whole file (see
      :func:`nodes.snapshot.complete_export`): a file that failed to parse, and then expired before
      anyone replayed it, would otherwise have left its window in neither the export nor the feed.
    - A job Shoptet still reports pending or running is retried (its record lags its webhook).
    - Option ``endpoints`` (ours): several processes may start on ``job:finished``; each lists the
      job endpoints it wants (``[/api/orders/snapshot]``) and lets other jobs stop here with 1003.
    """

    name = "shoptet-job-finished-webhook"
    Options = JobFinishedOptions
    needs_install = False

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        payload = shoptet.parse_body(WebhookPayload, message.body, self.name)
        if payload.event != JOB_FINISHED:
            return Result(code=ResultCode.STOP_AND_FAIL, message=f"Event [event={payload.event}] is not supported")
        application = shoptet.application_for(ctx, message)
        install = await self._install(ctx, message, payload.eshopId, application)
        if install is None or not install.enabled:
            state = "is not installed" if install is None else "is disabled"
            return Result(
                code=ResultCode.DO_NOT_CONTINUE,
                message=f"Shoptet with eshopId [{payload.eshopId}] {state} for {application}.",
            )
        client = shoptet.client_for(ctx, install)
        envelope = await client.request("GET", f"/api/system/jobs/{shoptet.path_segment(payload.eventInstance)}")
        job = shoptet.data_of(envelope, "job")
        if job.get("status") in UNFINISHED:
            # Shoptet's job record has not caught up with its webhook yet: passed on, the job failed
            # parsing as "not completed", and a replay of that trash entry never fetched it again
            raise RetryableError(f"job {job.get('jobId')} is still {job.get('status')}")
        wanted = shoptet.names_option(ctx, "endpoints")
        if wanted and job_endpoint(job) not in wanted:
            return Result(
                code=ResultCode.DO_NOT_CONTINUE,
                body=job,
                message=f"job {job.get('jobId')} of {job.get('endpoint')} is not for this process",
            )
        return Result(body=job, message=f"job {job.get('jobId')} of user {install.user}")

    async def _install(self, ctx: NodeContext, message: Message, eshop_id: str, application: str) -> Install | None:
        """The install the ingress started this process for (its ``user`` header: an e-shop may be
        installed under two users, and the webhook was signed with one's key); else the e-shop's."""
        if message.user:
            named = await ctx.store.get_install(message.user, application)
            if named is not None and named.eshop_id == eshop_id:
                return named
        return await ctx.store.find_by_eshop(eshop_id, application)
