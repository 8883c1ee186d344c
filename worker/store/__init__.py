"""The install store: installs, their settings and secrets, webhooks, tokens, trash, leases."""

from worker.store.base import Install, InstallStore, TrashEntry, WebhookRegistration

__all__ = ["Install", "InstallStore", "TrashEntry", "WebhookRegistration"]
