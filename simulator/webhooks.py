"""Webhook registrations and their delivery, signed the way Shoptet signs them.

Every delivery body is the raw JSON ``{eshopId, event, eventCreated, eventInstance}``; the
``Shoptet-Webhook-Signature`` header is the hex HMAC-SHA1 of exactly those bytes with the e-shop's
signature key. Failed deliveries are retried with a doubling backoff; each attempt is counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from simulator.config import SimulatorConfig
from simulator.envelope import ShoptetError
from simulator.stats import Stats
from simulator.store import EshopData
from simulator.timefmt import now, shoptet_time

SIGNATURE_HEADER = "Shoptet-Webhook-Signature"
#: Events Shoptet answers 409 for when one e-shop would have both (openapi.yaml's event table).
MUTUALLY_EXCLUSIVE = (
    {"order:update", "order:cancel"},
    {"customer:update", "customer:disableOrders"},
    {"customer:update", "customer:enableOrders"},
)


def sign(key: str, body: bytes) -> str:
    """Hex HMAC-SHA1 of the raw body: what a receiver recomputes to trust a delivery."""
    return hmac.new(key.encode(), body, hashlib.sha1).hexdigest()


@dataclass
class Webhook:
    id: int
    eshop_id: int
    event: str
    url: str
    created: datetime
    updated: datetime
    send_payload: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.event,
            "url": self.url,
            "created": shoptet_time(self.created),
            "updated": shoptet_time(self.updated),
            "sendPayload": self.send_payload,
        }


@dataclass
class Delivery:
    """One notification and what became of it (kept for tests: ``sim.state.webhooks.deliveries``)."""

    webhook_id: int
    event: str
    url: str
    body: bytes
    attempts: int = 0
    statuses: list[int | str] = field(default_factory=list)
    delivered: bool = False
    done: bool = False


class Webhooks:
    def __init__(self, config: SimulatorConfig, stats: Stats) -> None:
        self.config = config
        self.stats = stats
        self.registrations: dict[int, dict[str, Webhook]] = {}
        self.deliveries: deque[Delivery] = deque(maxlen=10_000)
        self._next_id = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    # registrations -------------------------------------------------------------------------------
    def registered(self, eshop_id: int) -> list[Webhook]:
        return sorted(self.registrations.get(eshop_id, {}).values(), key=lambda w: w.id)

    def register(self, eshop_id: int, wanted: list[tuple[str, str, str | None]]) -> list[Webhook]:
        """Register (event, url, sendPayload) items all or nothing; one URL per event, else 422."""
        existing = self.registrations.setdefault(eshop_id, {})
        events = [event for event, _, _ in wanted]
        for event in events:
            if event in existing or events.count(event) > 1:
                raise ShoptetError(422, "webhook-exists", "Webhook already exists for this event", event)
        for group in MUTUALLY_EXCLUSIVE:
            if len(group & (set(events) | set(existing))) > 1:
                raise ShoptetError(409, "webhook-conflict", f"Events {sorted(group)} cannot be combined", "event")
        created = []
        stamp = now()
        for event, url, send_payload in wanted:
            hook = Webhook(self._next_id, eshop_id, event, url, stamp, stamp, send_payload)
            self._next_id += 1
            existing[event] = hook
            created.append(hook)
        return created

    def delete(self, eshop_id: int, webhook_id: int) -> None:
        hooks = self.registrations.get(eshop_id, {})
        for event, hook in list(hooks.items()):
            if hook.id == webhook_id:
                del hooks[event]
                return
        raise ShoptetError(404, "webhook-not-found", f"Webhook with id {webhook_id} not found.", str(webhook_id))

    def has(self, eshop_id: int, event: str) -> bool:
        return event in self.registrations.get(eshop_id, {})

    # delivery ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.config.webhook_timeout_seconds)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def emit(self, eshop: EshopData, event: str, instance: str) -> Delivery | None:
        """Queue a notification if the e-shop registered the event; call from the server's loop."""
        hook = self.registrations.get(eshop.eshop_id, {}).get(event)
        if hook is None:
            return None
        payload = {
            "eshopId": eshop.eshop_id,
            "event": event,
            "eventCreated": shoptet_time(now()),
            "eventInstance": instance,
        }
        delivery = Delivery(hook.id, event, hook.url, json.dumps(payload).encode())
        self.deliveries.append(delivery)
        task = asyncio.get_running_loop().create_task(self._deliver(eshop, delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    async def _deliver(self, eshop: EshopData, delivery: Delivery) -> None:
        assert self._client is not None, "Webhooks.start() runs in the app's lifespan"
        backoff = self.config.webhook_retry_backoff_seconds
        while delivery.attempts < self.config.webhook_max_attempts:
            if delivery.attempts:
                await asyncio.sleep(backoff)
                backoff *= 2
            delivery.attempts += 1
            self.stats.webhook_attempts += 1
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(eshop.signature_key, delivery.body)}
            try:
                response = await self._client.post(delivery.url, content=delivery.body, headers=headers)
            except httpx.HTTPError as exc:
                delivery.statuses.append(type(exc).__name__)
                continue
            delivery.statuses.append(response.status_code)
            if response.is_success:
                delivery.delivered = True
                self.stats.webhook_delivered += 1
                self.stats.webhook_by_event[delivery.event] += 1
                break
        else:
            self.stats.webhook_failed += 1
        delivery.done = True
