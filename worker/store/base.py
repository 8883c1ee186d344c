"""What the rest of the worker may ask of the install store.

Two backends implement it (SQLite by default, PostgreSQL for many workers). Every update touches one
setting or one row so that two workers never lose each other's writes: there is deliberately no
"save the whole install" call.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field


class Install(BaseModel):
    """One e-shop connected through one application. ``secrets`` are decrypted only in memory."""

    user: str
    application: str
    enabled: bool = True
    eshop_id: str | None = None
    #: When the install was last added (install callback, ``install add``): an addon lifecycle event
    #: created before then is about an earlier install of the e-shop (a late retry).
    installed_at: datetime | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    #: Never serialised (``model_dump``): a dump of an install must not carry its credentials.
    secrets: dict[str, str] = Field(default_factory=dict, repr=False, exclude=True)
    #: Stored secrets the current ``SECRET_KEY`` cannot decrypt (left out of ``secrets``): one such
    #: row must fail its own install's work, not every listing of installs (cron for all of them).
    unreadable_secrets: list[str] = Field(default_factory=list, exclude=True)

    def __str__(self) -> str:  # never print secrets by accident
        return f"Install(user={self.user!r}, application={self.application!r}, eshop_id={self.eshop_id!r})"


class WebhookRegistration(BaseModel):
    user: str
    application: str
    event: str
    webhook_id: int
    url: str
    topology: str | None = None


class TrashEntry(BaseModel):
    """A message that could not be processed, with everything an operator needs to fix it."""

    id: int | None = None
    topic: str
    partition: int | None = None
    offset: int | None = None
    node_id: str | None = None
    node_name: str | None = None
    topology_name: str | None = None
    topology_version: str | None = None
    user: str | None = None
    correlation_id: str | None = None
    process_id: str | None = None
    attempts: int = 0
    error_class: str
    error_message: str
    http_status: int | None = None
    error_body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    key: str | None = None
    body: Any = None
    raw_body: str | None = None
    created_at: datetime | None = None


class InstallStore(Protocol):
    # installs ---------------------------------------------------------------------------------
    async def add_install(self, install: Install, *, managed: Collection[str] = ()) -> None:
        """Create the install, or update it from an install command run again.

        Run again for the same e-shop (a new token, a re-install), the given settings and secrets
        replace theirs, the ``managed`` keys (the command's own configuration) it does not give are
        removed, and the rest stay: the watermarks and the webhook signature key were learned from
        that e-shop, and losing them would re-import history and fail every webhook's signature.
        For another e-shop under the same user (or an install without one), nothing is kept.
        """

    async def get_install(self, user: str, application: str) -> Install | None: ...

    async def find_by_eshop(self, eshop_id: str, application: str) -> Install | None:
        """The e-shop's install in ``application``: the first of :meth:`installs_of_eshop`."""

    async def installs_of_eshop(self, eshop_id: str, application: str) -> list[Install]:
        """Every install of the e-shop in ``application``, enabled ones first, then by user.

        Usually one; two when an e-shop was installed under two users (one token added twice, an
        addon e-shop added by hand and then installed through the callback)."""

    async def list_installs(self, application: str | None = None, *, enabled_only: bool = False) -> list[Install]: ...

    async def set_setting(self, user: str, application: str, key: str, value: Any) -> None:
        """Atomically set one plain setting, leaving every other setting as it is."""

    async def set_secret(self, user: str, application: str, key: str, value: str) -> None:
        """Atomically set one encrypted setting."""

    async def set_enabled(self, user: str, application: str, enabled: bool) -> bool:
        """Return False when there is no such install."""

    async def remove_install(self, user: str, application: str) -> bool:
        """Remove the install with its webhooks and cached tokens."""

    # webhooks ---------------------------------------------------------------------------------
    async def add_webhook(self, registration: WebhookRegistration) -> None: ...

    async def list_webhooks(self, user: str, application: str) -> list[WebhookRegistration]: ...

    async def remove_webhook(self, user: str, application: str, webhook_id: int) -> None: ...

    # short-lived token cache (encrypted) -------------------------------------------------------
    async def get_token(self, key: str) -> tuple[str, datetime] | None: ...

    async def put_token(self, key: str, token: str, expires_at: datetime) -> None: ...

    async def delete_token(self, key: str, token: str | None = None) -> None:
        """Drop the cached token; with ``token`` given, only if it is still that one."""

    # leases: single flight across processes (token refresh, scheduler ticks) ------------------
    async def acquire_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the named lease for ``owner``; an expired lease can be taken by anyone."""

    async def release_lease(self, name: str, owner: str) -> None: ...

    async def hand_over_lease(self, name: str, owner: str, new_owner: str, ttl_seconds: float) -> bool:
        """Give the lease ``owner`` holds to ``new_owner`` for ``ttl_seconds``, in one step (no gap
        for another to take it); False when ``owner`` no longer holds it."""

    async def lease_holder(self, name: str) -> str | None:
        """Who holds the named lease now; None when nobody does (never taken, released, expired)."""

    async def purge_expired_leases(self) -> int:
        """Delete expired leases; returns how many. An expired lease means nothing any more (anyone
        may take it), but without this one row per webhook and per cron firing stays forever."""

    # trash --------------------------------------------------------------------------------------
    async def add_trash(self, entry: TrashEntry) -> int: ...

    async def list_trash(
        self,
        limit: int = 100,
        *,
        after_id: int | None = None,
        user: str | None = None,
        node_name: str | None = None,
        topology_name: str | None = None,
    ) -> list[TrashEntry]:
        """Oldest first, at most ``limit``: those after ``after_id`` (the next page), of ``user``,
        of node type ``node_name``, of topology ``topology_name``."""

    async def get_trash(self, entry_id: int) -> TrashEntry | None: ...

    async def remove_trash(self, entry_id: int) -> bool: ...

    async def count_trash(self) -> int: ...

    async def close(self) -> None: ...
