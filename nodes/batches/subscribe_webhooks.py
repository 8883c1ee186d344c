"""shoptet-subscribe-webhooks: register the webhooks the deployed processes start on."""

from __future__ import annotations

from typing import Any

from nodes import shoptet
from worker.envelope import Message, ResultCode
from worker.errors import StopError
from worker.node import Batch, Emit, NodeContext, Result
from worker.store import WebhookRegistration


def webhook_url(ctx: NodeContext, application: str) -> str:
    """Where Shoptet calls us: the ingress route of this application."""
    return f"{ctx.settings.public_base_url.rstrip('/')}/webhooks/shoptet/{application}"


def wanted_events(ctx: NodeContext) -> list[str]:
    """Option ``events`` (a list) if the topology gives one, else every event a topology starts on."""
    configured = ctx.options.get("events")
    if configured:
        if not isinstance(configured, list) or not all(isinstance(e, str) for e in configured):
            raise StopError("option `events` must be a list of Shoptet event names")
        return list(dict.fromkeys(configured))
    return sorted(ctx.webhook_events)


class ShoptetSubscribeWebhooks(Batch):
    """POST /api/webhooks ``{data: [{event, url}]}`` for the events not yet registered.

    Registered = stored for this (user, application); every returned webhook id is stored, so
    shoptet-unsubscribe-webhooks can remove it. Emits nothing. Codes: 0; 1003 when every event is
    already registered (or none is wanted); 409/422 stop (trash).
    """

    name = "shoptet-subscribe-webhooks"

    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result:
        install = ctx.require_install()
        client = ctx.require_shoptet()
        url = webhook_url(ctx, install.application)
        known = {w.event for w in await ctx.store.list_webhooks(install.user, install.application)}
        missing = [event for event in wanted_events(ctx) if event not in known]
        if not missing:
            return Result(code=ResultCode.DO_NOT_CONTINUE, message="All webhooks are already registered.")
        envelope = await client.request(
            "POST", "/api/webhooks", json={"data": [{"event": e, "url": url} for e in missing]}
        )
        created: list[dict[str, Any]] = shoptet.data_of(envelope, "webhooks")
        for webhook in created:
            await ctx.store.add_webhook(
                WebhookRegistration(
                    user=install.user,
                    application=install.application,
                    event=str(webhook["event"]),
                    webhook_id=int(webhook["id"]),
                    url=str(webhook.get("url") or url),
                )
            )
        return Result(message=f"registered {', '.join(str(w['event']) for w in created)}")
