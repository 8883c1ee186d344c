"""shoptet-unsubscribe-webhooks: remove every webhook registered for this install."""

from __future__ import annotations

from nodes.options import WebhookEventsOptions
from nodes.shoptet import names_option, path_segment
from worker.envelope import Message
from worker.errors import StopError
from worker.node import Batch, Emit, NodeContext, Result


class ShoptetUnsubscribeWebhooks(Batch):
    """DELETE /api/webhooks/{id} for each stored webhook, then forget it. Emits nothing.

    Fix: a 404 means Shoptet no longer has it, which is what we wanted: it counts as removed
    (Orchesty's 404 branch was dead code). Option ``events`` limits the removal to those events.
    Codes: 0; other 4xx stop (trash); 423/429/5xx repeat (already removed ones stay removed).

    Runs for a disabled install too: taking its webhooks off before ``install remove`` is what a
    disabled shop needs, and refused, it had to be enabled again (its crons and webhooks with it).
    """

    name = "shoptet-unsubscribe-webhooks"
    Options = WebhookEventsOptions
    accepts_disabled_install = True

    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result:
        install = ctx.require_install()
        client = ctx.require_shoptet()
        only = names_option(ctx, "events")
        removed = 0
        for webhook in await ctx.store.list_webhooks(install.user, install.application):
            if only and webhook.event not in only:
                continue
            try:
                await client.request("DELETE", f"/api/webhooks/{path_segment(webhook.webhook_id)}")
            except StopError as exc:
                if exc.status != 404:
                    raise
            await ctx.store.remove_webhook(install.user, install.application, webhook.webhook_id)
            removed += 1
        return Result(message=f"removed {removed} webhook(s)")
