"""The install store: installs, their settings and secrets, webhooks, tokens, trash, leases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.store.base import Install, InstallStore, TrashEntry, WebhookRegistration

if TYPE_CHECKING:
    from worker.settings import Settings


async def open_store(settings: Settings) -> InstallStore:
    """Open the store named by ``DATABASE_URL`` (SQLite file or PostgreSQL), migrating its schema.

    Imported lazily so that importing the models (as every node does) does not pull in SQLAlchemy.
    """
    from worker.store.crypto import secret_box_from_settings
    from worker.store.sql import SqlInstallStore

    store = await SqlInstallStore.open(settings.database_url, secret_box_from_settings(settings))
    try:
        await store.check_secret_key()
    except BaseException:
        await store.close()
        raise
    return store


__all__ = ["Install", "InstallStore", "TrashEntry", "WebhookRegistration", "open_store"]
