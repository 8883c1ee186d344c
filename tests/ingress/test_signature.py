"""The HMAC-SHA1 rule, the grace period of the previous key, and key renewal through Shoptet's API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from applications.client import ShoptetClient
from applications.premium import PremiumApplication
from worker.limiter import LocalLimiter
from worker.store import Install
from worker.store.crypto import SecretBox
from worker.store.sql import SqlInstallStore
from worker.webhook_keys import (
    CURRENT_KEY,
    PREVIOUS_KEY,
    RENEW_PATH,
    ROTATED_AT,
    SignatureKeyError,
    renew_signature_key,
    sign,
    verify_signature,
)

NOW = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
GRACE = 3600.0


def shop(**secrets: str) -> Install:
    return Install(user="shop-1", application="shoptet-premium", eshop_id="1", secrets=secrets)


def test_rfc2202_vector() -> None:
    """HMAC-SHA1 test case 2 of RFC 2202: the rule is plain HMAC-SHA1, hex, of the raw bytes."""
    assert sign("Jefe", b"what do ya want for nothing?") == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"


def test_shoptet_style_vector_verifies() -> None:
    body = b'{"eshopId": 222651, "event": "order:create", "eventCreated": "2019-01-08T15:13:39+0100", "eventInstance": "00001"}'  # noqa: E501
    key = "8a5e881b19ad6cc0bc986587b22e30be"
    signature = sign(key, body)
    install = shop(**{CURRENT_KEY: key})

    assert verify_signature(body, signature, install, NOW, GRACE)
    assert verify_signature(body, signature.upper(), install, NOW, GRACE)  # hex case does not matter
    assert not verify_signature(body + b" ", signature, install, NOW, GRACE)  # re-serialised body is another body
    assert not verify_signature(body, None, install, NOW, GRACE)
    assert not verify_signature(body, "", install, NOW, GRACE)
    assert not verify_signature(body, "zz" * 20 + "é", install, NOW, GRACE)


def test_every_flipped_byte_fails() -> None:
    body = json.dumps({"eshopId": 1, "event": "order:create", "eventCreated": "x", "eventInstance": "1"}).encode()
    install = shop(**{CURRENT_KEY: "k"})
    signature = sign("k", body)
    for i in range(len(body)):
        flipped = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        assert not verify_signature(flipped, signature, install, NOW, GRACE), i
    for i in range(len(signature)):
        other = "0" if signature[i] != "0" else "1"
        assert not verify_signature(body, signature[:i] + other + signature[i + 1 :], install, NOW, GRACE), i


def test_previous_key_only_within_grace() -> None:
    body = b"{}"
    old = sign("old", body)
    rotated = (NOW - timedelta(seconds=GRACE - 1)).isoformat()
    install = shop(**{CURRENT_KEY: "new", PREVIOUS_KEY: "old"})
    install.settings[ROTATED_AT] = rotated
    assert verify_signature(body, old, install, NOW, GRACE)
    assert not verify_signature(body, old, install, NOW + timedelta(seconds=2), GRACE)
    install.settings.pop(ROTATED_AT)
    assert not verify_signature(body, old, install, NOW, GRACE)  # no recorded rotation: no grace
    assert not verify_signature(body, sign("other", body), shop(**{CURRENT_KEY: "new"}), NOW, GRACE)


def test_no_key_never_verifies() -> None:
    assert not verify_signature(b"{}", sign("", b"{}"), shop(), NOW, GRACE)


@pytest.fixture
async def sql_store(tmp_path: Path) -> AsyncIterator[SqlInstallStore]:
    store = await SqlInstallStore.open(f"sqlite:///{tmp_path / 's.sqlite3'}", SecretBox(SecretBox.generate_key()))
    yield store
    await store.close()


def _client(install: Install, handler: httpx.MockTransport) -> ShoptetClient:
    return ShoptetClient(
        http=httpx.AsyncClient(transport=handler),
        application=PremiumApplication(),
        install=install,
        limiter=LocalLimiter(),
        base_url="https://api.test",
    )


async def test_renew_moves_the_current_key_to_previous(sql_store: SqlInstallStore) -> None:
    install = shop(token="t", **{CURRENT_KEY: "first-key"})
    await sql_store.add_install(install)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"signatureKey": "second-key"}, "errors": None, "metadata": None})

    await renew_signature_key(_client(install, httpx.MockTransport(answer)), sql_store, install)

    [request] = seen
    assert (request.method, request.url.path) == ("POST", RENEW_PATH)
    stored = await sql_store.get_install("shop-1", "shoptet-premium")
    assert stored is not None
    assert stored.secrets[CURRENT_KEY] == "second-key"
    assert stored.secrets[PREVIOUS_KEY] == "first-key"
    rotated = datetime.fromisoformat(stored.settings[ROTATED_AT])
    assert abs((datetime.now(UTC) - rotated).total_seconds()) < 60
    assert install.secrets[CURRENT_KEY] == "second-key"  # the caller's copy is current too
    body = b'{"eshopId": 1}'
    now = datetime.now(UTC)
    assert verify_signature(body, sign("first-key", body), stored, now, GRACE)  # in the grace period
    assert verify_signature(body, sign("second-key", body), stored, now, GRACE)


async def test_renew_gives_every_install_of_the_e_shop_the_new_key(sql_store: SqlInstallStore) -> None:
    """Shoptet keeps one key per e-shop: written to the asking install alone, another install of
    the same e-shop kept a key that no longer verified, and the e-shop's webhooks were refused (or
    dropped as "install disabled") once the asking install was removed or disabled."""
    first = shop(token="t", **{CURRENT_KEY: "first-key"})
    await sql_store.add_install(first)
    second = first.model_copy(update={"user": "shop-2", "secrets": {"token": "t2"}})
    await sql_store.add_install(second)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": {"signatureKey": "second-key"}, "errors": None, "metadata": None})

    await renew_signature_key(_client(second, httpx.MockTransport(answer)), sql_store, second)

    for user in ("shop-1", "shop-2"):
        stored = await sql_store.get_install(user, "shoptet-premium")
        assert stored is not None and stored.secrets[CURRENT_KEY] == "second-key"
    kept = await sql_store.get_install("shop-1", "shoptet-premium")
    assert kept is not None and kept.secrets[PREVIOUS_KEY] == "first-key"  # its grace period


async def test_first_renew_has_no_previous_key(sql_store: SqlInstallStore) -> None:
    install = shop(token="t")
    await sql_store.add_install(install)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": {"signatureKey": "k1"}, "errors": None, "metadata": None})

    await renew_signature_key(_client(install, httpx.MockTransport(answer)), sql_store, install)
    stored = await sql_store.get_install("shop-1", "shoptet-premium")
    assert stored is not None and stored.secrets == {"token": "t", CURRENT_KEY: "k1"}


async def test_answer_without_a_key_changes_nothing(sql_store: SqlInstallStore) -> None:
    install = shop(token="t", **{CURRENT_KEY: "first-key"})
    await sql_store.add_install(install)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": {}, "errors": None, "metadata": None})

    with pytest.raises(SignatureKeyError):
        await renew_signature_key(_client(install, httpx.MockTransport(answer)), sql_store, install)
    stored = await sql_store.get_install("shop-1", "shoptet-premium")
    assert stored is not None and stored.secrets[CURRENT_KEY] == "first-key" and PREVIOUS_KEY not in stored.secrets
