"""shoptet: the OAuth addon. Short-lived API access tokens, shared by every node and process.

Shoptet keeps at most 5 valid access tokens per install, so each worker fetching its own would soon
break the others. One token per install therefore lives in the store's (encrypted) token cache and
is refreshed by exactly one caller at a time:

- within a process, an ``asyncio.Lock`` per install queues the callers that found it stale;
- across processes, a store lease names the refresher; the others poll the cache until the new
  token appears (or the lease expires because its holder died, and one of them takes over);
- whoever holds lock and lease re-reads the cache first: someone may have refreshed meanwhile.

A token is used until ``refresh_margin`` seconds before Shoptet's expiry (the cache stores that
"use until" time). A 401 (``expired-token``, or ``invalid-token`` for a token Shoptet revoked) drops
the cached token only if it is still the one that failed, so fifty requests failing together cause
one refresh, not fifty.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import structlog

from applications.base import Application
from applications.oauth import OAuthError, fetch_access_token
from worker.errors import NodeError, RetryableError, StopError
from worker.store import Install, InstallStore
from worker.store.keys import token_key_prefix

log = structlog.get_logger(__name__)

ACCESS_TOKEN_HEADER = "Shoptet-Access-Token"
#: Name of the secret that holds the permanent OAuth token in the install store.
OAUTH_TOKEN_SECRET = "oauthToken"
#: Plain setting with a per-install OAuth server (overrides the application's default).
OAUTH_SERVER_SETTING = "oauthServerUrl"
ESHOP_URL_SETTING = "eshopUrl"


def access_token_key(user: str, oauth_token: str, application: str = "shoptet") -> str:
    """Token cache key: the install's prefix (removing the install drops it) and a fingerprint of the
    OAuth token the access token comes from.

    The fingerprint keeps a refresh that was under way while the e-shop uninstalled and installed
    the addon again from caching its token (fetched with the old OAuth token) for the new install.
    """
    fingerprint = hashlib.sha256(oauth_token.encode()).hexdigest()[:16]
    return f"{token_key_prefix(user, application)}access:{fingerprint}"


def install_token_key(install: Install, application: str = "shoptet") -> str:
    """``install``'s access token cache key (an install without an OAuth token has none to fetch)."""
    return access_token_key(install.user, install.secrets.get(OAUTH_TOKEN_SECRET, ""), application)


class AddonApplication(Application):
    name = "shoptet"

    def __init__(
        self,
        *,
        store: InstallStore,
        http: httpx.AsyncClient,
        oauth_server_url: str | None = None,
        refresh_margin_seconds: float = 30.0,
        lease_ttl_seconds: float = 60.0,
        poll_interval_seconds: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.http = http
        self.oauth_server_url = oauth_server_url
        self.refresh_margin_seconds = refresh_margin_seconds
        self.lease_ttl_seconds = lease_ttl_seconds
        self.poll_interval_seconds = poll_interval_seconds
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._locks: dict[str, asyncio.Lock] = {}
        #: Per install: refresh attempts ended, and the last one's failure (shared by its waiters).
        self._ended: dict[str, int] = {}
        self._failed: dict[str, tuple[int, NodeError]] = {}
        #: Access tokens this process fetched from Shoptet (for metrics and tests).
        self.refreshes = 0

    async def auth_headers(self, install: Install) -> dict[str, str]:
        return {ACCESS_TOKEN_HEADER: await self.access_token(install)}

    async def token_expired(self, install: Install, headers: dict[str, str]) -> bool:
        sent = headers.get(ACCESS_TOKEN_HEADER)
        if sent is None:
            return False
        await self.store.delete_token(install_token_key(install, self.name), token=sent)
        log.info("access token expired early; dropped", user=install.user)
        return True

    def limiter_key(self, install: Install) -> str:
        # One shared access token per install at a time, so the install names the token.
        return f"{self.name}:{install.eshop_id or install.user}"

    def server_url(self, install: Install) -> str:
        """The OAuth server: the install's own, else the configured one, else the e-shop's URL."""
        url = (
            install.settings.get(OAUTH_SERVER_SETTING)
            or self.oauth_server_url
            or install.settings.get(ESHOP_URL_SETTING)
        )
        if not url:
            raise StopError(f"{install}: no OAuth server URL (set SHOPTET_OAUTH_SERVER_URL or eshopUrl)")
        return str(url)

    async def access_token(self, install: Install) -> str:
        """A valid access token for ``install``: the cached one, or one fresh from Shoptet."""
        key = install_token_key(install, self.name)
        ended_before = self._ended.get(key, 0)
        token = await self._cached(key)
        if token is not None:
            return token
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            failed = self._failed.get(key)
            if failed is not None and failed[0] > ended_before:
                # a refresh that ended while this caller waited failed: its answer is ours too,
                # where asking again one caller after another kept hitting a failing OAuth server
                raise failed[1]
            try:
                token = await self._refresh(install, key)
            except NodeError as exc:
                self._failed[key] = (self._end(key), exc)
                raise
            self._end(key)
            self._failed.pop(key, None)
            return token

    def _end(self, key: str) -> int:
        ended = self._ended[key] = self._ended.get(key, 0) + 1
        return ended

    async def _cached(self, key: str) -> str | None:
        cached = await self.store.get_token(key)
        if cached is None:
            return None
        token, use_until = cached
        return token if use_until.timestamp() > self.clock() else None

    async def _refresh(self, install: Install, key: str) -> str:
        lease = f"token-refresh:{key}"
        deadline = self.clock() + self.lease_ttl_seconds * 2
        while True:
            token = await self._cached(key)
            if token is not None:
                return token
            if await self.store.acquire_lease(lease, self.owner, self.lease_ttl_seconds):
                try:
                    token = await self._cached(key)  # another process may have just finished
                    if token is not None:
                        return token
                    return await self._fetch(install, key)
                finally:
                    await self.store.release_lease(lease, self.owner)
            if self.clock() > deadline:
                raise RetryableError(f"{install}: timed out waiting for another worker's token refresh")
            await asyncio.sleep(self.poll_interval_seconds)

    async def _fetch(self, install: Install, key: str) -> str:
        oauth_token = install.secrets.get(OAUTH_TOKEN_SECRET)
        if not oauth_token:
            if OAUTH_TOKEN_SECRET in install.unreadable_secrets:
                raise StopError(f"{install}: its OAuth token cannot be decrypted (wrong SECRET_KEY?)")
            raise StopError(f"{install} has no OAuth token")
        try:
            fresh = await fetch_access_token(self.http, self.server_url(install), oauth_token)
        except OAuthError as exc:
            error = StopError if exc.refused else RetryableError
            raise error(f"{install}: {exc.message}", status=exc.status) from exc
        self.refreshes += 1
        now = self.clock()
        # Refresh `margin` early, but never make a short-lived token unusable from the start.
        margin = min(self.refresh_margin_seconds, fresh.expires_in / 2)
        use_until = datetime.fromtimestamp(now + fresh.expires_in - margin, UTC)
        token = fresh.token.get_secret_value()
        await self.store.put_token(key, token, use_until)
        log.info("access token refreshed", user=install.user, expires_in=fresh.expires_in)
        return token
