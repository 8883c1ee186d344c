"""addon:* lifecycle events change the e-shop's install."""

from __future__ import annotations

from datetime import UTC, datetime

from applications.addon import access_token_key
from applications.installs import install_addon_with_token
from worker.lifecycle import apply_addon_event
from worker.store import WebhookRegistration
from worker.store.sql import SqlInstallStore


async def _setup(store: SqlInstallStore) -> None:
    await install_addon_with_token(store, user="u42", eshop_id="42", oauth_token="perm")
    await store.add_webhook(
        WebhookRegistration(user="u42", application="shoptet", event="order:create", webhook_id=1, url="http://x")
    )
    await store.put_token(access_token_key("u42", "perm"), "acc", datetime.now(UTC))


async def test_suspend_and_approve(store: SqlInstallStore) -> None:
    await _setup(store)
    assert await apply_addon_event(store, "shoptet", "42", "addon:suspend") is True
    assert (await store.get_install("u42", "shoptet")).enabled is False  # type: ignore[union-attr]
    assert await apply_addon_event(store, "shoptet", "42", "addon:approve") is True
    assert (await store.get_install("u42", "shoptet")).enabled is True  # type: ignore[union-attr]


async def test_uninstall_and_terminate_remove_everything(store: SqlInstallStore) -> None:
    for event in ("addon:uninstall", "addon:terminate"):
        await _setup(store)
        assert await apply_addon_event(store, "shoptet", "42", event) is True
        assert await store.get_install("u42", "shoptet") is None
        assert await store.list_webhooks("u42", "shoptet") == []
        assert await store.get_token(access_token_key("u42", "perm")) is None


async def test_unknown_eshop_or_event_changes_nothing(store: SqlInstallStore) -> None:
    await _setup(store)
    assert await apply_addon_event(store, "shoptet", "999", "addon:uninstall") is False
    assert await apply_addon_event(store, "shoptet-premium", "42", "addon:uninstall") is False
    assert await apply_addon_event(store, "shoptet", "42", "order:create") is False
    assert await store.get_install("u42", "shoptet") is not None


async def test_a_suspend_retried_after_the_approve_that_followed_it_is_ignored(store: SqlInstallStore) -> None:
    """Shoptet retries a failed delivery: the suspend applied after the later approve left an
    active addon's install disabled (no cron, webhooks ignored)."""
    await _setup(store)
    suspended_at = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    approved_at = datetime(2026, 11, 25, 8, 5, tzinfo=UTC)

    assert await apply_addon_event(store, "shoptet", "42", "addon:approve", approved_at) is True
    assert await apply_addon_event(store, "shoptet", "42", "addon:suspend", suspended_at) is False  # the retry
    assert (await store.get_install("u42", "shoptet")).enabled is True  # type: ignore[union-attr]

    later = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # a suspend after it still applies
    assert await apply_addon_event(store, "shoptet", "42", "addon:suspend", later) is True
    assert (await store.get_install("u42", "shoptet")).enabled is False  # type: ignore[union-attr]
