"""shoptet-premium: a private API token per e-shop, sent as ``Shoptet-Private-API-Token``.

The token never expires and cannot be refreshed, so this application is only a header; absolute URLs
(snapshot job result files) are handled by :meth:`applications.client.ShoptetClient.url`.
"""

from __future__ import annotations

import hashlib

import httpx
from pydantic import BaseModel

from applications.base import Application
from applications.redaction import answer_without_credentials
from worker.errors import StopError
from worker.store import Install

TOKEN_HEADER = "Shoptet-Private-API-Token"
#: Name of the secret that holds the token in the install store.
TOKEN_SECRET = "token"


def token_fingerprint(token: str) -> str:
    """A stable, non-reversible id of a token: safe in limiter keys, metrics and logs."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class PremiumApplication(Application):
    name = "shoptet-premium"

    async def auth_headers(self, install: Install) -> dict[str, str]:
        return {TOKEN_HEADER: self._token(install)}

    def limiter_key(self, install: Install) -> str:
        # Shoptet limits connections per token: two installs with one token share the slots.
        return f"{self.name}:{token_fingerprint(self._token(install))}"

    @staticmethod
    def _token(install: Install) -> str:
        token = install.secrets.get(TOKEN_SECRET)
        if not token:
            if TOKEN_SECRET in install.unreadable_secrets:
                raise StopError(f"{install}: its premium token cannot be decrypted (wrong SECRET_KEY?)")
            raise StopError(f"{install} has no premium token")
        return token


class EshopIdentity(BaseModel):
    """What ``GET /api/eshop`` tells about the token's e-shop (only what we store)."""

    eshop_id: str
    name: str | None = None
    url: str | None = None


class InvalidPremiumToken(Exception):
    """Shoptet refused the token; the message is Shoptet's own."""


class ShoptetNotReachable(Exception):
    """No answer from Shoptet's API, or a busy or failing one: nothing is known about the token yet."""


async def verify_premium_token(http: httpx.AsyncClient, api_url: str, token: str) -> EshopIdentity:
    """Ask ``GET /api/eshop`` who the token belongs to; refuse a token Shoptet does not accept."""
    try:
        response = await http.get(
            f"{api_url.rstrip('/')}/api/eshop",
            headers={TOKEN_HEADER: token, "Content-Type": "application/vnd.shoptet.v1.0"},
        )
    except httpx.HTTPError as exc:
        raise ShoptetNotReachable(f"Shoptet API not reachable at {api_url} ({type(exc).__name__})") from exc
    try:
        body = answer_without_credentials(response, response.json())
    except ValueError:
        body = None
    status = response.status_code
    if status in (408, 429) or status >= 500 or (status == 200 and not isinstance(body, dict)):
        # no verdict on the token: Shoptet is busy or failing, or a proxy answered for it
        what = f"HTTP {status}" if isinstance(body, dict) else f"HTTP {status}, not JSON"
        raise ShoptetNotReachable(f"Shoptet answered {what} at {api_url}; try again later")
    if status != 200 or not isinstance(body, dict):
        raise InvalidPremiumToken(_shoptet_message(body) or f"Shoptet answered HTTP {status}")
    info = (body.get("data") or {}).get("contactInformation") or {}
    if info.get("eshopId") is None:
        raise InvalidPremiumToken("Shoptet's /api/eshop answer has no eshopId")
    return EshopIdentity(eshop_id=str(info["eshopId"]), name=info.get("eshopName"), url=info.get("url"))


def _shoptet_message(body: object) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return ""
    return "; ".join(f"{e.get('errorCode')}: {e.get('message')}" for e in body["errors"] if isinstance(e, dict))
