"""``shoptet-worker install ...`` end to end on a SQLite store, with Shoptet mocked by respx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from worker.cli.install import install_app
from worker.settings import get_settings
from worker.store.crypto import SecretBox

API = "https://api.test"
runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    db = tmp_path / "cli.sqlite3"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SECRET_KEY", SecretBox.generate_key())
    monkeypatch.setenv("SHOPTET_API_URL", API)
    get_settings.cache_clear()
    yield db
    get_settings.cache_clear()


def _listed() -> list[dict[str, object]]:
    result = runner.invoke(install_app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_premium_install_list_disable_enable_remove(env: Path) -> None:
    with respx.mock:
        respx.get(f"{API}/api/eshop").respond(
            200, json={"data": {"contactInformation": {"eshopId": 5, "url": "https://s.test/"}}}
        )
        result = runner.invoke(install_app, ["add", "premium", "--user", "shop5", "--token", "tok-secret-5"])
    assert result.exit_code == 0, result.output
    assert "eshopId 5" in result.output

    text = runner.invoke(install_app, ["list"]).output
    assert "shop5" in text and "tok-secret-5" not in text
    assert _listed() == [
        {
            "user": "shop5",
            "application": "shoptet-premium",
            "eshopId": "5",
            "enabled": True,
            "settings": {"eshopId": 5, "eshopUrl": "https://s.test/"},
            "secrets": ["token"],
        }
    ]
    assert b"tok-secret-5" not in env.read_bytes()

    assert runner.invoke(install_app, ["disable", "shop5"]).exit_code == 0
    assert _listed()[0]["enabled"] is False
    assert runner.invoke(install_app, ["enable", "shop5", "-a", "premium"]).exit_code == 0
    assert _listed()[0]["enabled"] is True
    assert runner.invoke(install_app, ["remove", "shop5"]).exit_code == 0
    assert _listed() == []
    missing = runner.invoke(install_app, ["remove", "shop5"])
    assert missing.exit_code == 1 and "no install shop5" in missing.output


def test_invalid_premium_token_is_refused(env: Path) -> None:
    with respx.mock:
        respx.get(f"{API}/api/eshop").respond(
            401, json={"data": None, "errors": [{"errorCode": "invalid-token", "message": "Invalid token."}]}
        )
        result = runner.invoke(install_app, ["add", "premium", "--user", "x", "--token", "bad"])
    assert result.exit_code == 1
    assert "invalid-token: Invalid token." in result.output
    assert _listed() == []


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (httpx.ConnectError("refused"), "Shoptet API not reachable"),
        (httpx.Response(503, json={}), "Shoptet answered HTTP 503"),
        (httpx.Response(429, json={}), "Shoptet answered HTTP 429"),
        (httpx.Response(408, text="timeout"), "Shoptet answered HTTP 408, not JSON"),
        (httpx.Response(200, text="<html>maintenance</html>"), "Shoptet answered HTTP 200, not JSON"),
    ],
)
def test_an_unreachable_or_failing_api_is_not_blamed_on_the_token(
    env: Path, answer: Exception | httpx.Response, said: str
) -> None:
    with respx.mock:
        respx.get(f"{API}/api/eshop").mock(side_effect=[answer])
        result = runner.invoke(install_app, ["add", "premium", "--user", "x", "--token", "good-token"])
    assert result.exit_code == 1
    assert f"cannot check the token: {said}" in result.output
    assert "refused by Shoptet" not in result.output
    assert _listed() == []


def test_addon_install_with_known_oauth_token(env: Path) -> None:
    result = runner.invoke(
        install_app,
        ["add", "addon", "--user", "u9", "--eshop-id", "9", "--oauth-token", "perm", "--eshop-url", "https://9.test"],
    )
    assert result.exit_code == 0, result.output
    assert _listed()[0]["secrets"] == ["oauthToken"]
    assert _listed()[0]["settings"] == {"eshopId": 9, "eshopUrl": "https://9.test"}
    ambiguous_user = runner.invoke(install_app, ["disable", "u9", "-a", "nonsense"])
    assert ambiguous_user.exit_code == 1 and "unknown application" in ambiguous_user.output


def test_premium_token_from_dot_env(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """typer reads the process environment only: a token in .env, which `make run` took, was a
    "Missing option '--token'" here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SHOPTET_PRIVATE_API_TOKEN", raising=False)
    (tmp_path / ".env").write_text("SHOPTET_PRIVATE_API_TOKEN=tok-from-dotenv\n")
    get_settings.cache_clear()
    with respx.mock:
        route = respx.get(f"{API}/api/eshop").respond(
            200, json={"data": {"contactInformation": {"eshopId": 6, "url": "https://s.test/"}}}
        )
        result = runner.invoke(install_app, ["add", "premium", "--user", "shop6", "--no-start"])
    assert result.exit_code == 0, result.output
    assert route.calls.last.request.headers["Shoptet-Private-API-Token"] == "tok-from-dotenv"

    (tmp_path / ".env").write_text("")
    get_settings.cache_clear()
    missing = runner.invoke(install_app, ["add", "premium", "--user", "shop7", "--no-start"])
    assert missing.exit_code == 2 and "SHOPTET_PRIVATE_API_TOKEN" in missing.output


def test_renew_signature_key_by_hand(env: Path) -> None:
    """Webhooks refused with 401 for a stale key had no way out but removing the install (and its
    watermarks) and adding it again."""
    with respx.mock:
        respx.get(f"{API}/api/eshop").respond(
            200, json={"data": {"contactInformation": {"eshopId": 6, "url": "https://s.test/"}}}
        )
        assert runner.invoke(install_app, ["add", "premium", "--user", "shop6", "--token", "tok-6"]).exit_code == 0
        renew = respx.post(f"{API}/api/webhooks/renew-signature-key").respond(
            200, json={"data": {"signatureKey": "fresh-key-6"}, "errors": None, "metadata": None}
        )
        result = runner.invoke(install_app, ["renew-signature-key", "shop6"])
    assert result.exit_code == 0, result.output
    assert "webhook signature key renewed" in result.output and "fresh-key-6" not in result.output
    assert renew.calls.last.request.headers["Shoptet-Private-API-Token"] == "tok-6"
    [listed] = _listed()
    assert "webhook_signature_key" in listed["secrets"]  # type: ignore[operator]

    missing = runner.invoke(install_app, ["renew-signature-key", "nobody"])
    assert missing.exit_code == 1 and "no install nobody" in missing.output


def test_an_install_with_webhooks_registered_at_shoptet_is_not_removed_unasked(env: Path) -> None:
    """Removed, Shoptet went on calling its webhooks, and webhooks-unsubscribe, which needs the
    install, could no longer take them off."""
    import asyncio

    from worker.store import WebhookRegistration, open_store

    with respx.mock:
        respx.get(f"{API}/api/eshop").respond(
            200, json={"data": {"contactInformation": {"eshopId": 7, "url": "https://s.test/"}}}
        )
        assert runner.invoke(install_app, ["add", "premium", "--user", "shop7", "--token", "tok-7"]).exit_code == 0

    async def register() -> None:
        store = await open_store(get_settings())
        try:
            registration = WebhookRegistration(
                user="shop7", application="shoptet-premium", event="order:create", webhook_id=9, url="https://x"
            )
            await store.add_webhook(registration)
        finally:
            await store.close()

    asyncio.run(register())
    refused = runner.invoke(install_app, ["remove", "shop7"])
    assert refused.exit_code == 1
    assert "webhooks-unsubscribe --user shop7" in refused.output
    assert [i["user"] for i in _listed()] == ["shop7"]

    assert runner.invoke(install_app, ["remove", "shop7", "--keep-webhooks"]).exit_code == 0
    assert _listed() == []
