"""The applications a worker process uses, built once and shared by every node."""

from __future__ import annotations

import httpx

from applications.addon import AddonApplication
from applications.base import Application
from applications.premium import PremiumApplication
from worker.settings import Settings
from worker.store import InstallStore


def build_applications(settings: Settings, store: InstallStore, http: httpx.AsyncClient) -> dict[str, Application]:
    """Applications by name (``shoptet-premium``, ``shoptet``).

    Build them once per process: the addon's in-process refresh lock only works when every node of
    the process shares one :class:`AddonApplication`.
    """
    return {
        PremiumApplication.name: PremiumApplication(),
        AddonApplication.name: AddonApplication(
            store=store,
            http=http,
            oauth_server_url=settings.shoptet_oauth_server_url,
            refresh_margin_seconds=settings.shoptet_token_refresh_margin_seconds,
            lease_ttl_seconds=max(60.0, settings.shoptet_timeout_seconds * 2),
        ),
    }
