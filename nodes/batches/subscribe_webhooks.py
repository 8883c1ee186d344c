"""shoptet-subscribe-webhooks: register the webhooks the deployed processes start on."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from nodes import shoptet
from nodes.options import WebhookEventsOptions
from nodes.paging import read_all
from worker.envelope import Message, ResultCode
from worker.errors import StopError
from worker.node import Batch, Emit, NodeContext, Result
from worker.store import WebhookRegistration
from worker.webhook_events import EXCLUSIVE_WEBHOOK_EVENTS, SYSTEM_WEBHOOK_EVENTS, exclusive_with
from worker.webhook_keys import has_signature_key, renew_signature_key


def webhook_url(ctx: NodeContext, application: str) -> str:
    """Where Shoptet calls us: the ingress route of this application."""
    return f"{ctx.settings.public_base_url.rstrip('/')}/webhooks/shoptet/{application}"


#: Shoptet registers at most this many webhooks in one call.
REGISTER_PER_CALL = 50


def wanted_events(ctx: NodeContext) -> list[str]:
    """Option ``events`` (a list) if the topology gives one, else every event a topology starts on
    (system events left out: see :data:`SYSTEM_WEBHOOK_EVENTS`)."""
    configured = shoptet.names_option(ctx, "events")
    if configured:
        system = sorted(set(configured) & SYSTEM_WEBHOOK_EVENTS)
        if system:
            raise StopError(
                f"option `events` names {', '.join(system)}: Shoptet's system webhooks are set up in the "
                "Partners' addon administration, not through the API"
            )
        return configured
    return sorted(ctx.webhook_events)


class ShoptetSubscribeWebhooks(Batch):
    """POST /api/webhooks ``{data: [{event, url}]}`` for the wanted events Shoptet does not have yet,
    at most 50 a call (Shoptet's limit).

    Fix: Orchesty (and we, before) judged "registered" by its own records only, so a webhook removed
    on Shoptet's side was never registered again, and a lost record made the POST fail as a
    duplicate. This node first reads what Shoptet has (GET /api/webhooks) for this install and our
    URL, and brings the store in line: ids Shoptet no longer has are forgotten, ones it has and we
    did not record are adopted. Every id is stored, so shoptet-unsubscribe-webhooks can remove it.
    An install without a webhook signature key gets one first (``POST
    /api/webhooks/renew-signature-key``): the ingress answers 401 to every webhook it cannot verify.

    Shoptet keeps one URL per event and refuses a whole POST (422) if one of its events is taken.
    An event taken by another URL (an Orchesty install being migrated, or this worker under an
    earlier ``PUBLIC_BASE_URL``) is therefore left out of the POST, so the free events still get
    registered, and the message then stops naming each taken event, its URL and webhook id: an
    operator removes those and replays it. So are events Shoptet does not register together
    (``order:cancel`` with ``order:update``, ``customer:update`` with ``customer:enableOrders`` or
    ``customer:disableOrders``: 409 for the whole call): the one Shoptet has, or the more general
    one, is registered, and the message stops naming the other. Emits nothing. Codes: 0; 1003
    when every wanted event is registered (or none is wanted); 409/422 and taken events stop
    (trash).
    """

    name = "shoptet-subscribe-webhooks"
    Options = WebhookEventsOptions

    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result:
        install = ctx.require_install()
        client = ctx.require_shoptet()
        url = webhook_url(ctx, install.application)
        if not has_signature_key(install):
            # the ingress can verify nothing without it, and Shoptet hands a key out only when asked
            # for a new one; before registering, so that the first delivery is already verifiable
            await renew_signature_key(client, ctx.store, install)
        on_shoptet = await read_all(client, "/api/webhooks", "webhooks", items_per_page=500)
        await _reconcile(ctx, install.user, install.application, on_shoptet, url)
        registered = {str(w["event"]) for w in on_shoptet if w.get("url") == url}
        taken = {str(w["event"]): w for w in on_shoptet if w.get("url") != url}
        missing = [event for event in wanted_events(ctx) if event not in registered]
        if not missing:
            return Result(code=ResultCode.DO_NOT_CONTINUE, message="All webhooks are already registered.")
        ours = {str(w["event"]): w for w in on_shoptet if w.get("url") == url}
        free = [event for event in missing if event not in taken]
        free, clashing = _compatible(free, on_shoptet=registered | set(taken))
        created: list[dict[str, Any]] = []
        for start in range(0, len(free), REGISTER_PER_CALL):
            chunk = free[start : start + REGISTER_PER_CALL]
            envelope = await client.request(
                "POST", "/api/webhooks", json={"data": [{"event": e, "url": url} for e in chunk]}
            )
            # stored call by call: a later call that fails leaves these recorded for the next run
            for webhook in shoptet.data_of(envelope, "webhooks"):
                await ctx.store.add_webhook(
                    _registration(user=install.user, application=install.application, webhook=webhook, url=url)
                )
                created.append(webhook)
        blocked = [taken[event] for event in missing if event in taken]
        done = [str(w["event"]) for w in created]
        if blocked or clashing:
            problems = [_taken_message(blocked, url)] if blocked else []
            problems += [_clashing_message(clashing, ours=ours, taken=taken)] if clashing else []
            raise StopError((f"registered {', '.join(done)}; " if done else "") + " ".join(problems))
        return Result(message=f"registered {', '.join(done)}")


def _compatible(events: list[str], *, on_shoptet: set[str]) -> tuple[list[str], dict[str, str]]:
    """``events`` without those Shoptet does not register together with one it has or one kept
    (409 for the whole call, which left every other event unregistered), and those left out, each
    with the event it clashes with. Of two wanted, the more general one is kept (``order:update``)."""
    general_first = sorted(events, key=lambda e: not any(e == pair[0] for pair in EXCLUSIVE_WEBHOOK_EVENTS))
    kept: set[str] = set()
    clashing: dict[str, str] = {}
    for event in general_first:
        other = exclusive_with(event, on_shoptet | kept)
        if other is None:
            kept.add(event)
        else:
            clashing[event] = other
    return [e for e in events if e in kept], clashing


def _clashing_message(
    clashing: dict[str, str], *, ours: dict[str, dict[str, Any]], taken: dict[str, dict[str, Any]]
) -> str:
    """Why each left-out event was, and what clears it: the other event is wanted too, or a webhook
    on Shoptet (this worker's, for an event no topology starts on any more, or another URL's)."""

    def clash(event: str, other: str) -> str:
        if other in taken:
            holder = taken[other]
            where = _origin(str(holder.get("url") or ""))
            return f"{event} (with {other}, registered for {where}: webhook {holder['id']})"
        if other in ours:
            webhook = ours[other]["id"]
            return f"{event} (with {other}, this worker's webhook {webhook}: delete it if nothing starts on {other})"
        return f"{event} (with {other}, wanted too: start the topologies on one of them)"

    pairs = "; ".join(clash(event, other) for event, other in sorted(clashing.items()))
    return (
        f"Shoptet does not register these together with another event of the e-shop: {pairs}. "
        "Clear each (order:update covers cancellations; DELETE /api/webhooks/{id} deletes a webhook), "
        "then replay this message."
    )


def _taken_message(blocked: list[dict[str, Any]], url: str) -> str:
    taken = "; ".join(f"{w['event']} -> {_origin(str(w.get('url') or ''))} (webhook {w['id']})" for w in blocked)
    return (
        f"Shoptet allows one URL per event and these are registered for another URL than {url}: "
        f"{taken}. Delete them (DELETE /api/webhooks/{{id}}, or the old integration's unsubscribe), "
        "then replay this message."
    )


def _registration(*, user: str, application: str, webhook: dict[str, Any], url: str) -> WebhookRegistration:
    """``url``: ours, recorded when Shoptet's answer leaves it out."""
    return WebhookRegistration(
        user=user,
        application=application,
        event=str(webhook["event"]),
        webhook_id=int(webhook["id"]),
        url=str(webhook.get("url") or url),
    )


async def _reconcile(ctx: NodeContext, user: str, application: str, on_shoptet: list[dict[str, Any]], url: str) -> None:
    """Forget stored ids Shoptet no longer has; adopt the ones it has for our URL that we did not
    record. Webhooks for other URLs are never adopted: with a private token they may belong to
    another integration, and unsubscribing would delete them."""
    stored = {w.webhook_id: w for w in await ctx.store.list_webhooks(user, application)}
    live = {int(w["id"]): w for w in on_shoptet}
    for webhook_id in stored.keys() - live.keys():
        ctx.log.info(
            "webhook gone from Shoptet; forgotten", webhook_id=webhook_id, webhook_event=stored[webhook_id].event
        )
        await ctx.store.remove_webhook(user, application, webhook_id)
    for webhook_id in live.keys() - stored.keys():
        if live[webhook_id].get("url") == url:
            ctx.log.info("webhook on Shoptet but not recorded; adopted", webhook_id=webhook_id)
            await ctx.store.add_webhook(
                _registration(user=user, application=application, webhook=live[webhook_id], url=url)
            )


def _origin(url: str) -> str:
    """Scheme and host only: another integration's webhook URL may carry its secret (Orchesty's
    end in ``/token/<token>``), and this text goes to trash and logs. The id identifies it."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"
