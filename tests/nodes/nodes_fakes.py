"""Fakes shared by the node tests: in-memory store, two fake applications, a node runner."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from applications.base import Application
from applications.client import ShoptetClient
from worker.envelope import H, Message
from worker.limiter import LocalLimiter
from worker.node import Batch, Connector, NodeContext, Result
from worker.settings import Settings
from worker.store import Install, WebhookRegistration

API = "https://api.test.shoptet"
NOW = datetime(2024, 5, 20, 12, 0, 0, tzinfo=UTC)
PREMIUM, ADDON = "shoptet-premium", "shoptet"


class MemoryStore:
    """The InstallStore methods the nodes use, in memory; ``set_setting`` calls are recorded."""

    def __init__(self) -> None:
        self.installs: dict[tuple[str, str], Install] = {}
        self.webhooks: dict[tuple[str, str], list[WebhookRegistration]] = {}
        self.setting_writes: list[tuple[str, str, str, Any]] = []

    async def add_install(self, install: Install, *, managed: Collection[str] = ()) -> None:
        before = self.installs.get((install.user, install.application))
        if before is not None and before.eshop_id is not None and before.eshop_id == install.eshop_id:
            # as the SQL store: for the same e-shop, what the command does not manage stays
            install = install.model_copy(
                update={
                    "settings": {**_without(before.settings, managed), **install.settings},
                    "secrets": {**_without(before.secrets, managed), **install.secrets},
                }
            )
        self.installs[(install.user, install.application)] = install

    async def get_install(self, user: str, application: str) -> Install | None:
        found = self.installs.get((user, application))
        return found.model_copy(deep=True) if found else None

    async def find_by_eshop(self, eshop_id: str, application: str) -> Install | None:
        found = await self.installs_of_eshop(eshop_id, application)
        return found[0] if found else None

    async def installs_of_eshop(self, eshop_id: str, application: str) -> list[Install]:
        found = [i for i in self.installs.values() if i.eshop_id == eshop_id and i.application == application]
        return [i.model_copy(deep=True) for i in sorted(found, key=lambda i: (not i.enabled, i.user))]

    async def set_setting(self, user: str, application: str, key: str, value: Any) -> None:
        self.setting_writes.append((user, application, key, value))
        self.installs[(user, application)].settings[key] = value

    async def set_secret(self, user: str, application: str, key: str, value: str) -> None:
        self.installs[(user, application)].secrets[key] = value

    def setting(self, install: Install, key: str) -> Any:
        return self.installs[(install.user, install.application)].settings.get(key)

    async def add_webhook(self, registration: WebhookRegistration) -> None:
        self.webhooks.setdefault((registration.user, registration.application), []).append(registration)

    async def list_webhooks(self, user: str, application: str) -> list[WebhookRegistration]:
        return list(self.webhooks.get((user, application), []))

    async def remove_webhook(self, user: str, application: str, webhook_id: int) -> None:
        key = (user, application)
        self.webhooks[key] = [w for w in self.webhooks.get(key, []) if w.webhook_id != webhook_id]


class FakePremium(Application):
    """Like shoptet-premium: a static private token header."""

    name = PREMIUM

    async def auth_headers(self, install: Install) -> dict[str, str]:
        return {"Shoptet-Private-API-Token": install.secrets["token"]}

    def limiter_key(self, install: Install) -> str:
        return f"{PREMIUM}:{install.user}"


class FakeAddon(Application):
    """Like the OAuth addon: an access token header (no token server needed here)."""

    name = ADDON

    async def auth_headers(self, install: Install) -> dict[str, str]:
        return {"Shoptet-Access-Token": f"access-{install.user}"}

    def limiter_key(self, install: Install) -> str:
        return f"{ADDON}:{install.user}"


APPLICATIONS: dict[str, Application] = {PREMIUM: FakePremium(), ADDON: FakeAddon()}


@dataclass
class Run:
    """What one node run produced."""

    result: Result
    emitted: list[Any] = field(default_factory=list)
    #: Each ``ctx.delivered()`` call: (items emitted by then, store setting writes by then).
    deliveries: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Harness:
    store: MemoryStore
    http: httpx.AsyncClient
    limiter: LocalLimiter
    settings: Settings
    install: Install
    #: What the last batch run emitted, kept when the run raised (a failure part-way).
    emitted: list[Any] = field(default_factory=list)

    def client(self, install: Install) -> ShoptetClient:
        return ShoptetClient(
            http=self.http,
            application=APPLICATIONS[install.application],
            install=install,
            limiter=self.limiter,
            base_url=API,
        )

    def context(self, *, options: dict[str, Any] | None = None, install: bool = True, **extra: Any) -> NodeContext:
        target = self.install if install else None
        return NodeContext(
            store=self.store,  # type: ignore[arg-type]
            settings=self.settings,
            install=target,
            application=APPLICATIONS[self.install.application] if install else None,
            shoptet=self.client(self.install) if install else None,
            options=options or {},
            **extra,
        )

    async def run(
        self,
        node: Connector | Batch,
        body: Any = None,
        *,
        ctx: NodeContext | None = None,
        cursor: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Run:
        all_headers = {H.USER: self.install.user, H.APPLICATION: self.install.application, **(headers or {})}
        if cursor is not None:
            all_headers[H.CURSOR] = json.dumps(cursor)
        message = Message(body=body, headers=all_headers)
        context = ctx or self.context(options=options)
        if isinstance(node, Batch):
            emitted: list[Any] = []
            self.emitted = emitted
            deliveries: list[tuple[int, int]] = []

            async def emit(item: Any) -> None:
                emitted.append(item)

            async def delivered() -> None:
                deliveries.append((len(emitted), len(self.store.setting_writes)))

            context.delivered = delivered
            return Run(await node.process(message, context, emit), emitted, deliveries)
        return Run(await node.process(message, context))


def envelope(data: Any, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Shoptet's response envelope."""
    return {"data": data, "errors": errors, "metadata": {"requestId": "019c8c34-64f3-7328-af43-bf1e34fa39d7"}}


def error_body(code: str, message: str, instance: str = "") -> dict[str, Any]:
    return {"data": None, "errors": [{"errorCode": code, "message": message, "instance": instance}]}


def _without(values: dict[str, Any], keys: Collection[str]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in keys}
