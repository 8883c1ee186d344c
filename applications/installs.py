"""Creating installs: the steps shared by the CLI and the addon's install callback.

Each flow verifies with Shoptet first and writes to the store last, so a refused token or a failed
code exchange leaves nothing behind.
"""

from __future__ import annotations

import asyncio

import httpx
from pydantic import BaseModel, SecretStr

from applications.addon import (
    ESHOP_URL_SETTING,
    OAUTH_SERVER_SETTING,
    OAUTH_TOKEN_SECRET,
    AddonApplication,
    install_token_key,
)
from applications.oauth import exchange_code
from applications.premium import TOKEN_SECRET, PremiumApplication, verify_premium_token
from worker.errors import StoreUnavailable
from worker.settings import Settings
from worker.store import Install, InstallStore
from worker.tasks import backoff_delays

#: Short names operators type (``install add premium``) for the applications' real names.
ALIASES = {
    "premium": PremiumApplication.name,
    PremiumApplication.name: PremiumApplication.name,
    "addon": AddonApplication.name,
    AddonApplication.name: AddonApplication.name,
}


#: What the install commands set, so an install added again loses what it no longer gives (an
#: addon re-installed through the callback must not keep an OAuth server given by hand before).
#: Everything else (watermarks, the webhook signature key) stays for the same e-shop.
PREMIUM_SETTINGS = frozenset({"eshopId", ESHOP_URL_SETTING, TOKEN_SECRET})
ADDON_SETTINGS = frozenset({"eshopId", ESHOP_URL_SETTING, "contactEmail", OAUTH_SERVER_SETTING, OAUTH_TOKEN_SECRET})


def application_name(value: str) -> str:
    """``premium``/``addon`` or a full name to the application's name; ValueError otherwise."""
    try:
        return ALIASES[value]
    except KeyError:
        raise ValueError(f"unknown application {value!r}: use premium or addon") from None


def _eshop_id_setting(eshop_id: str) -> int | str:
    """Shoptet's eshopId is a number; keep it one in plain settings when it looks like one."""
    return int(eshop_id) if eshop_id.isdigit() else eshop_id


async def install_premium(
    store: InstallStore, http: httpx.AsyncClient, *, api_url: str, user: str, token: str
) -> Install:
    """Verify ``token`` against ``GET /api/eshop`` and store it with the e-shop's id.

    Raises :class:`applications.premium.InvalidPremiumToken` (Shoptet's message), or
    :class:`applications.premium.ShoptetNotReachable`, and stores nothing
    when Shoptet refuses the token.
    """
    identity = await verify_premium_token(http, api_url, token)
    settings: dict[str, object] = {"eshopId": _eshop_id_setting(identity.eshop_id)}
    if identity.url:
        settings[ESHOP_URL_SETTING] = identity.url
    install = Install(
        user=user,
        application=PremiumApplication.name,
        eshop_id=identity.eshop_id,
        settings=settings,
        secrets={TOKEN_SECRET: token},
    )
    await store.add_install(install, managed=PREMIUM_SETTINGS)
    return install


class AddonNotConfigured(Exception):
    """The addon's client credentials or OAuth server are missing from settings."""


class AddonConfig(BaseModel):
    """What the code exchange needs: the addon's client credentials and its OAuth server."""

    client_id: str
    client_secret: SecretStr
    redirect_url: str
    oauth_server_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> AddonConfig:
        values = {
            "SHOPTET_OAUTH_CLIENT_ID": settings.shoptet_oauth_client_id,
            "SHOPTET_OAUTH_CLIENT_SECRET": settings.shoptet_oauth_client_secret,
            "SHOPTET_OAUTH_REDIRECT_URL": settings.shoptet_oauth_redirect_url,
            "SHOPTET_OAUTH_SERVER_URL": settings.shoptet_oauth_server_url,
        }
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise AddonNotConfigured(f"the Shoptet addon is not configured: set {', '.join(missing)}")
        assert settings.shoptet_oauth_client_secret is not None
        return cls(
            client_id=str(settings.shoptet_oauth_client_id),
            client_secret=settings.shoptet_oauth_client_secret,
            redirect_url=str(settings.shoptet_oauth_redirect_url),
            oauth_server_url=str(settings.shoptet_oauth_server_url),
        )


async def install_addon_from_code(
    store: InstallStore, http: httpx.AsyncClient, config: AddonConfig, code: str
) -> Install:
    """Exchange the install ``code`` for the OAuth token and store the install (user = eshopId).

    Raises :class:`applications.oauth.OAuthError` and stores nothing when the exchange fails. The
    code is used up by then: a store that does not answer is tried again for a few seconds (it
    raised out of the callback as a 500, and the e-shop's permanent token was thrown away), then
    :class:`InstallNotStored`.
    """
    installed = await exchange_code(
        http,
        config.oauth_server_url,
        code=code,
        client_id=config.client_id,
        client_secret=config.client_secret.get_secret_value(),
        redirect_uri=config.redirect_url,
    )
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + STORE_RETRY_SECONDS
    for delay in backoff_delays(0.5, 2.0):
        try:
            return await install_addon_with_token(
                store,
                user=installed.eshop_id,
                eshop_id=installed.eshop_id,
                oauth_token=installed.oauth_token.get_secret_value(),
                eshop_url=installed.eshop_url,
                contact_email=installed.contact_email,
            )
        except StoreUnavailable as exc:
            if loop.time() + delay >= give_up_at:
                raise InstallNotStored(installed.eshop_id, exc.message) from exc
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - backoff_delays never ends


#: How long the install callback tries to store an install whose code it has exchanged.
STORE_RETRY_SECONDS = 10.0


class InstallNotStored(Exception):
    """The code was exchanged, but the store did not take the install."""

    def __init__(self, eshop_id: str, reason: str) -> None:
        super().__init__(f"e-shop {eshop_id}: the install could not be stored ({reason})")
        self.eshop_id = eshop_id


async def install_addon_with_token(
    store: InstallStore,
    *,
    user: str,
    eshop_id: str,
    oauth_token: str,
    eshop_url: str | None = None,
    contact_email: str | None = None,
    oauth_server_url: str | None = None,
) -> Install:
    """Store an addon install whose OAuth token is already known (e.g. installed elsewhere).

    A re-install replaces the install and drops the access token cached for the old OAuth token.
    """
    settings: dict[str, object] = {"eshopId": _eshop_id_setting(eshop_id)}
    if eshop_url:
        settings[ESHOP_URL_SETTING] = eshop_url
    if contact_email:
        settings["contactEmail"] = contact_email
    if oauth_server_url:
        settings[OAUTH_SERVER_SETTING] = oauth_server_url
    install = Install(
        user=user,
        application=AddonApplication.name,
        eshop_id=eshop_id,
        settings=settings,
        secrets={OAUTH_TOKEN_SECRET: oauth_token},
    )
    replaced = await store.get_install(user, AddonApplication.name)
    await store.add_install(install, managed=ADDON_SETTINGS)
    if replaced is not None:
        await store.delete_token(install_token_key(replaced))
    return install
