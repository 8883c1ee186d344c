"""Shoptet webhook signature keys: verifying a delivery and rotating the key.

Shoptet signs every webhook call with ``Shoptet-Webhook-Signature``: the hex HMAC-SHA1 of the raw
body with the e-shop's signature key. The key is an install secret. Rotating it
(``POST /api/webhooks/renew-signature-key``) makes Shoptet sign with the new key at once, while
deliveries already queued or being retried were signed with the old one; so the old key stays
valid for a grace period after the rotation, and only for that period.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from worker.store import Install, InstallStore

if TYPE_CHECKING:
    from applications.client import ShoptetClient

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "Shoptet-Webhook-Signature"
#: Install secrets: the key Shoptet signs with now, and the one it signed with before the last rotation.
CURRENT_KEY = "webhook_signature_key"
PREVIOUS_KEY = "webhook_signature_key_previous"
#: Plain install setting: when the key was last rotated (ISO 8601), the start of the grace period.
ROTATED_AT = "webhook_signature_key_rotated_at"
RENEW_PATH = "/api/webhooks/renew-signature-key"


class SignatureKeyError(RuntimeError):
    """Shoptet's answer to a key renewal carried no usable key."""


def sign(key: str, body: bytes) -> str:
    """Hex HMAC-SHA1 of the raw body: exactly what Shoptet puts in the signature header."""
    return hmac.new(key.encode(), body, hashlib.sha1).hexdigest()


def has_signature_key(install: Install) -> bool:
    return bool(install.secrets.get(CURRENT_KEY))


def _matches(key: str | None, body: bytes, signature: str) -> bool:
    if not key:
        return False
    # compare_digest on bytes: constant time, and no TypeError on non-ASCII input
    return hmac.compare_digest(sign(key, body).encode(), signature.encode())


def _previous_key_valid(install: Install, now: datetime, grace_seconds: float) -> bool:
    """The previous key counts only inside the grace period after a recorded rotation."""
    raw = install.settings.get(ROTATED_AT)
    if not raw:
        return False
    try:
        rotated_at = datetime.fromisoformat(str(raw))
    except ValueError:
        return False
    if rotated_at.tzinfo is None:
        rotated_at = rotated_at.replace(tzinfo=UTC)
    return (now - rotated_at).total_seconds() <= grace_seconds


def verify_signature(body: bytes, signature: str | None, install: Install, now: datetime, grace_seconds: float) -> bool:
    """True when ``signature`` is the body's HMAC with the install's current key, or with the
    previous key during ``grace_seconds`` after the last rotation. ``now`` must be timezone-aware.

    Both candidate digests are always computed so the answer takes the same time whichever key
    (if any) matches.
    """
    if not signature:
        return False
    given = signature.strip().lower()
    current = _matches(install.secrets.get(CURRENT_KEY), body, given)
    previous = _matches(install.secrets.get(PREVIOUS_KEY), body, given)
    return current or (previous and _previous_key_valid(install, now, grace_seconds))


async def renew_signature_key(client: ShoptetClient, store: InstallStore, install: Install) -> None:
    """Ask Shoptet for a new signature key; keep the old one as ``previous`` from now on.

    Shoptet keeps one key per e-shop, so every install of the e-shop under this application gets
    it: written to the asking install alone, the others kept a key that no longer verified, and
    the e-shop's webhooks were refused once that install was removed.

    The rotation time and the previous key are written before the new key, each atomically: a
    webhook arriving in between is checked against a consistent old state, or gets a 401 that
    Shoptet retries. ``install`` is updated in memory too, so the caller can keep using it.
    """
    envelope = await client.request("POST", RENEW_PATH)
    data = envelope.get("data")
    new_key = data.get("signatureKey") if isinstance(data, dict) else None
    if not isinstance(new_key, str) or not new_key:
        raise SignatureKeyError(f"{RENEW_PATH}: the answer has no data.signatureKey")
    others = await store.installs_of_eshop(install.eshop_id, install.application) if install.eshop_id else []
    holders = [install, *(i for i in others if i.user != install.user)]
    for holder in holders:
        await _store_key(store, holder, new_key)
    log.info("webhook signature key renewed", user=install.user, eshop_id=install.eshop_id, installs=len(holders))


async def _store_key(store: InstallStore, install: Install, new_key: str) -> None:
    old_key = install.secrets.get(CURRENT_KEY)
    if old_key and old_key != new_key:
        rotated_at = datetime.now(UTC).isoformat(timespec="seconds")
        await store.set_setting(install.user, install.application, ROTATED_AT, rotated_at)
        await store.set_secret(install.user, install.application, PREVIOUS_KEY, old_key)
        install.settings[ROTATED_AT] = rotated_at
        install.secrets[PREVIOUS_KEY] = old_key
    await store.set_secret(install.user, install.application, CURRENT_KEY, new_key)
    install.secrets[CURRENT_KEY] = new_key
