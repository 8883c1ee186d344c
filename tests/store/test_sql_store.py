"""The SQL install store, run on SQLite and PostgreSQL alike (see conftest)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from worker.store import Install, TrashEntry, WebhookRegistration
from worker.store import schema as t
from worker.store.keys import token_key_prefix
from worker.store.migrations import latest_version
from worker.store.sql import SqlInstallStore, async_database_url

SECRET = "super-secret-premium-token-123456"
Factory = Callable[[], Awaitable[SqlInstallStore]]


def _install(user: str = "u1", application: str = "shoptet-premium", **kw: object) -> Install:
    data: dict[str, object] = {
        "user": user,
        "application": application,
        "eshop_id": "111",
        "settings": {"eshopId": 111, "watermark": "2024-01-01T00:00:00+0100", "nested": {"a": [1, 2]}},
        "secrets": {"token": SECRET},
    }
    data.update(kw)
    return Install.model_validate(data)


async def test_install_round_trip(store: SqlInstallStore) -> None:
    await store.add_install(_install())
    await store.add_install(_install("u2", "shoptet", eshop_id="222", secrets={}, settings={}))

    got = await store.get_install("u1", "shoptet-premium")
    assert got is not None and got.installed_at is not None
    assert got.model_copy(update={"installed_at": None}) == _install()
    assert SECRET not in repr(got) and SECRET not in str(got)
    assert (await store.find_by_eshop("222", "shoptet")).user == "u2"  # type: ignore[union-attr]
    assert await store.find_by_eshop("222", "shoptet-premium") is None
    assert await store.get_install("nobody", "shoptet") is None
    assert [i.user for i in await store.list_installs()] == ["u1", "u2"]
    assert [i.user for i in await store.list_installs("shoptet")] == ["u2"]


async def test_adding_an_install_again_for_its_eshop_keeps_what_it_learned(store: SqlInstallStore) -> None:
    """A new token for the same e-shop: the watermark and signature key stay, the token is replaced."""
    await store.add_install(_install(secrets={"token": SECRET, "webhook_signature_key": "key-1"}))
    await store.add_install(_install(settings={"eshopId": 111, "eshopUrl": "https://x.cz/"}, secrets={"token": "new"}))
    got = await store.get_install("u1", "shoptet-premium")
    assert got is not None
    assert got.settings == {
        "eshopId": 111,
        "eshopUrl": "https://x.cz/",
        "watermark": "2024-01-01T00:00:00+0100",
        "nested": {"a": [1, 2]},
    }
    assert got.secrets == {"token": "new", "webhook_signature_key": "key-1"}
    assert got.enabled is True


async def test_an_install_added_again_is_installed_from_then_on(store: SqlInstallStore) -> None:
    """``installed_at`` tells a late addon event of an earlier install from one of this install."""
    await store.add_install(Install(user="u", application="shoptet", eshop_id="1"))
    first = await store.get_install("u", "shoptet")
    assert first is not None and first.installed_at is not None
    assert abs((datetime.now(UTC) - first.installed_at).total_seconds()) < 60
    await asyncio.sleep(0.01)
    await store.add_install(Install(user="u", application="shoptet", eshop_id="1"))
    again = await store.get_install("u", "shoptet")
    assert again is not None and again.installed_at is not None and again.installed_at > first.installed_at


async def test_adding_an_install_again_drops_the_managed_keys_it_no_longer_gives(store: SqlInstallStore) -> None:
    """An addon added by hand with its own OAuth server, then re-installed through the callback (which
    gives none), must use the configured server again, not the one given before."""
    await store.add_install(_install(settings={"eshopId": 111, "oauthServerUrl": "https://old/", "watermark": "w"}))
    await store.add_install(_install(settings={"eshopId": 111}), managed={"eshopId", "oauthServerUrl", "token"})
    got = await store.get_install("u1", "shoptet-premium")
    assert got is not None
    assert got.settings == {"eshopId": 111, "watermark": "w"}
    assert got.secrets == {"token": SECRET}


async def test_adding_an_install_again_for_another_eshop_replaces_the_whole_install(store: SqlInstallStore) -> None:
    await store.add_install(_install())
    await store.add_install(_install(eshop_id="999", settings={"only": True}, secrets={"other": "x"}, enabled=False))
    got = await store.get_install("u1", "shoptet-premium")
    assert got is not None
    assert got.eshop_id == "999"
    assert got.settings == {"only": True}
    assert got.secrets == {"other": "x"}
    assert got.enabled is False


async def test_set_setting_and_secret_touch_one_key(store: SqlInstallStore) -> None:
    await store.add_install(_install())
    await store.set_setting("u1", "shoptet-premium", "watermark", "2025-05-05T00:00:00+0200")
    await store.set_setting("u1", "shoptet-premium", "new", 5)
    await store.set_secret("u1", "shoptet-premium", "token", "rotated")
    got = await store.get_install("u1", "shoptet-premium")
    assert got is not None
    assert got.settings == {
        "eshopId": 111,
        "watermark": "2025-05-05T00:00:00+0200",
        "nested": {"a": [1, 2]},
        "new": 5,
    }
    assert got.secrets == {"token": "rotated"}


async def test_concurrent_updates_of_two_settings_both_survive(store_factory: Factory) -> None:
    """Two 'workers' (separate engines) write different settings of one install at the same time."""
    one, two = await store_factory(), await store_factory()
    await one.add_install(_install())

    async def writer(store: SqlInstallStore, key: str) -> None:
        for i in range(30):
            await store.set_setting("u1", "shoptet-premium", key, i)

    await asyncio.gather(writer(one, "ordersWatermark"), writer(two, "productsWatermark"))
    got = await one.get_install("u1", "shoptet-premium")
    assert got is not None
    assert got.settings["ordersWatermark"] == 29
    assert got.settings["productsWatermark"] == 29
    assert got.settings["watermark"] == "2024-01-01T00:00:00+0100"


async def test_secrets_are_not_readable_in_the_raw_rows(store: SqlInstallStore) -> None:
    await store.add_install(_install())
    await store.put_token("shoptet/u1/access", "access-token-plaintext-xyz", datetime.now(UTC))
    async with store._engine.connect() as conn:
        dumped = ""
        for table in (t.installs, t.install_settings, t.token_cache):
            for row in (await conn.execute(select(table))).all():
                dumped += repr(tuple(row))
    assert "token" in dumped  # the key name is visible, the value is not
    assert SECRET not in dumped
    assert "access-token-plaintext-xyz" not in dumped
    assert "2024-01-01T00:00:00+0100" in dumped  # plain settings stay plain


async def test_enable_disable_and_remove(store: SqlInstallStore) -> None:
    await store.add_install(_install())
    await store.add_install(_install("u2"))
    hook = WebhookRegistration(
        user="u1", application="shoptet-premium", event="order:create", webhook_id=7, url="http://x"
    )
    await store.add_webhook(hook)
    await store.put_token(token_key_prefix("u1", "shoptet-premium") + "access", "t1", datetime.now(UTC))
    await store.put_token(token_key_prefix("u2", "shoptet-premium") + "access", "t2", datetime.now(UTC))

    assert await store.set_enabled("u1", "shoptet-premium", False) is True
    assert await store.set_enabled("nobody", "shoptet-premium", False) is False
    assert [i.user for i in await store.list_installs(enabled_only=True)] == ["u2"]

    assert await store.remove_install("u1", "shoptet-premium") is True
    assert await store.remove_install("u1", "shoptet-premium") is False
    assert await store.get_install("u1", "shoptet-premium") is None
    assert await store.list_webhooks("u1", "shoptet-premium") == []
    assert await store.get_token("shoptet-premium/u1/access") is None
    assert await store.get_token("shoptet-premium/u2/access") is not None
    async with store._engine.connect() as conn:
        left = (await conn.execute(select(t.install_settings.c.user).distinct())).scalars().all()
    assert left == ["u2"]


async def test_webhooks(store: SqlInstallStore) -> None:
    first = WebhookRegistration(
        user="u1", application="shoptet", event="order:create", webhook_id=2, url="http://a", topology="t"
    )
    second = first.model_copy(update={"webhook_id": 1, "event": "job:finished", "topology": None})
    await store.add_webhook(first)
    await store.add_webhook(second)
    await store.add_webhook(first.model_copy(update={"url": "http://b"}))  # upsert, no duplicate
    assert await store.list_webhooks("u1", "shoptet") == [second, first.model_copy(update={"url": "http://b"})]
    await store.remove_webhook("u1", "shoptet", 1)
    assert [w.webhook_id for w in await store.list_webhooks("u1", "shoptet")] == [2]


async def test_token_cache(store: SqlInstallStore) -> None:
    expires = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    await store.put_token("k", "one", expires)
    assert await store.get_token("k") == ("one", expires)
    await store.delete_token("k", token="other")  # not the cached one: kept
    assert await store.get_token("k") == ("one", expires)
    await store.put_token("k", "two", expires + timedelta(seconds=5))
    await store.delete_token("k", token="one")
    assert await store.get_token("k") == ("two", expires + timedelta(seconds=5))
    await store.delete_token("k", token="two")
    assert await store.get_token("k") is None
    await store.put_token("k", "three", expires)
    await store.delete_token("k")
    assert await store.get_token("k") is None


async def test_leases(store: SqlInstallStore) -> None:
    assert await store.acquire_lease("refresh", "a", 30) is True
    assert await store.acquire_lease("refresh", "b", 30) is False
    assert await store.acquire_lease("refresh", "a", 30) is True  # renewal by the owner
    await store.release_lease("refresh", "b")  # not b's: nothing happens
    assert await store.acquire_lease("refresh", "b", 30) is False
    await store.release_lease("refresh", "a")
    assert await store.acquire_lease("refresh", "b", 0.05) is True
    await asyncio.sleep(0.1)
    assert await store.acquire_lease("refresh", "c", 30) is True  # expired: anyone may take it


async def test_a_lease_is_handed_over_only_by_its_live_holder(store: SqlInstallStore) -> None:
    assert await store.lease_holder("delivery") is None
    assert await store.acquire_lease("delivery", "handing", 30)
    assert await store.lease_holder("delivery") == "handing"
    assert await store.hand_over_lease("delivery", "someone-else", "accepted", 60) is False
    assert await store.hand_over_lease("delivery", "handing", "accepted", 60) is True
    assert await store.lease_holder("delivery") == "accepted"
    assert await store.acquire_lease("delivery", "handing", 30) is False  # the new holder keeps it
    assert await store.hand_over_lease("delivery", "accepted", "short", 0.05) is True
    await asyncio.sleep(0.1)
    assert await store.lease_holder("delivery") is None  # expired: held by nobody
    assert await store.hand_over_lease("delivery", "short", "late", 60) is False


async def test_expired_leases_are_purged_and_live_ones_kept(store: SqlInstallStore) -> None:
    assert await store.acquire_lease("webhook:old", "a", 0.05)
    assert await store.acquire_lease("cron:live", "a", 60)
    await asyncio.sleep(0.1)
    assert await store.purge_expired_leases() == 1
    assert await store.purge_expired_leases() == 0
    assert await store.acquire_lease("cron:live", "b", 60) is False  # still held by a
    assert await store.acquire_lease("webhook:old", "b", 60) is True


async def test_concurrent_lease_has_one_winner(store_factory: Factory) -> None:
    stores = [await store_factory() for _ in range(3)]
    results = await asyncio.gather(*(stores[i % 3].acquire_lease("one", f"owner-{i}", 30) for i in range(15)))
    assert results.count(True) == 1


async def test_trash(store: SqlInstallStore) -> None:
    entry = TrashEntry(
        topic="shoptet.node.detail",
        partition=2,
        offset=40,
        user="u1",
        attempts=3,
        error_class="StopError",
        error_message="GET /api/orders/1 -> 404",
        http_status=404,
        error_body={"errors": [{"errorCode": "not-found"}]},
        headers={"correlation-id": "c1"},
        body={"code": "1", "items": [1, 2]},
    )
    first = await store.add_trash(entry)
    second = await store.add_trash(entry.model_copy(update={"body": None, "raw_body": "{not json"}))
    assert second > first
    assert await store.count_trash() == 2
    got = await store.get_trash(first)
    assert got is not None and got.created_at is not None
    assert got.model_dump(exclude={"id", "created_at"}) == entry.model_dump(exclude={"id", "created_at"})
    assert [e.id for e in await store.list_trash()] == [first, second]
    assert [e.id for e in await store.list_trash(limit=1)] == [first]
    assert [e.id for e in await store.list_trash(limit=1, after_id=first)] == [second]  # the next page
    third = await store.add_trash(entry.model_copy(update={"user": "shop-2", "node_name": "n2", "topology_name": "t2"}))
    assert [e.id for e in await store.list_trash(user="shop-2")] == [third]
    assert [e.id for e in await store.list_trash(node_name="n2", topology_name="t2")] == [third]
    assert await store.list_trash(node_name="n2", topology_name="other") == []
    assert await store.remove_trash(third) is True
    assert await store.remove_trash(first) is True
    assert await store.remove_trash(first) is False
    assert await store.get_trash(first) is None
    assert await store.count_trash() == 1


async def test_a_trash_entry_with_overlong_fields_is_kept(store: SqlInstallStore) -> None:
    """A key or user header of any length can arrive on an inbound topic: PostgreSQL refused the row
    (varchar(255)), and the message it was for stayed in flight, failing for good."""
    long_user = "u" * 300
    entry = TrashEntry(
        topic="erp.order-requests",
        user=long_user,
        key="k" * 600,
        node_id="n" * 300,
        error_class="InstallNotFound",
        error_message="no install",
        headers={"user": long_user},
    )
    got = await store.get_trash(await store.add_trash(entry))
    assert got is not None
    assert got.user == long_user[:255] and got.key == "k" * 512
    assert got.headers == {"user": long_user}  # whole: what a replay uses


async def test_a_trash_entry_with_nul_characters_is_kept(store: SqlInstallStore) -> None:
    """Garbage on an inbound topic may hold NUL bytes, which PostgreSQL text refuses: the row was
    refused, and its message retried for good instead of reaching trash."""
    entry = TrashEntry(
        topic="erp.order-requests",
        user="shop\x00a",
        key="k\x00",
        error_class="MalformedMessage",
        error_message="body is not JSON: unexpected character \x00",
        raw_body="\x00\x01garbage",
        headers={"user": "shop\x00a"},
        body={"note": "a\x00b"},
    )
    got = await store.get_trash(await store.add_trash(entry))
    assert got is not None
    assert (got.user, got.key, got.raw_body) == ("shop\ufffda", "k\ufffd", "\ufffd\x01garbage")
    assert got.headers == {"user": "shop\x00a"} and got.body == {"note": "a\x00b"}  # JSON escapes NUL


async def test_schema_is_versioned_and_migrating_again_is_a_no_op(store_factory: Factory) -> None:
    store = await store_factory()
    again = await store_factory()  # opening a migrated database runs nothing
    async with again._engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version FROM schema_version ORDER BY version"))).scalars().all()
    assert versions == list(range(1, latest_version() + 1))
    await store.add_install(_install())
    assert await again.get_install("u1", "shoptet-premium") is not None


async def test_trash_ids_are_never_reused(store: SqlInstallStore) -> None:
    """``trash show 42`` then ``replay 42``: on SQLite, 42 could meanwhile name another message."""
    first = await store.add_trash(TrashEntry(topic="t", error_class="E", error_message="a", body={"code": "A"}))
    await store.remove_trash(first)
    second = await store.add_trash(TrashEntry(topic="t", error_class="E", error_message="b", body={"code": "B"}))
    assert second > first
    assert await store.get_trash(first) is None


async def test_a_version_1_sqlite_store_keeps_its_trash_through_the_id_migration(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from worker.store.crypto import SecretBox
    from worker.store.migrations import _v1_initial

    url = f"sqlite:///{tmp_path / 'v1.sqlite3'}"
    engine = create_async_engine(async_database_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(_v1_initial)
        await conn.execute(text("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at FLOAT NOT NULL)"))
        await conn.execute(text("INSERT INTO schema_version VALUES (1, 0)"))
        for n in (1, 2, 3):
            await conn.execute(
                text(
                    "INSERT INTO trash (id, topic, attempts, error_class, error_message, headers, body, created_at) "
                    "VALUES (:id, 't', 1, 'E', :m, '{}', :b, 0)"
                ),
                {"id": n, "m": f"m{n}", "b": f'{{"n": {n}}}'},
            )
        await conn.execute(text("DELETE FROM trash WHERE id = 3"))
    await engine.dispose()

    store = await SqlInstallStore.open(url, SecretBox(SecretBox.generate_key()))
    try:
        assert [(e.id, e.body) for e in await store.list_trash()] == [(1, {"n": 1}), (2, {"n": 2})]
        await store.remove_trash(2)
        added = await store.add_trash(TrashEntry(topic="t", error_class="E", error_message="new"))
        assert added == 3  # max id + 1 once: what was deleted before the upgrade is not known
        assert await store.add_trash(TrashEntry(topic="t", error_class="E", error_message="x")) == 4
        await store.remove_trash(4)
        assert await store.add_trash(TrashEntry(topic="t", error_class="E", error_message="y")) == 5
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/x.sqlite3", "sqlite+aiosqlite:///var/x.sqlite3"),
        ("postgres://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgresql://u@db/app?sslmode=require", "postgresql+asyncpg://u@db/app?ssl=require"),
    ],
)
def test_database_urls_map_to_async_drivers(url: str, expected: str) -> None:
    """A managed PostgreSQL's URL carries libpq's ``sslmode``, which asyncpg refused as an argument."""
    assert async_database_url(url) == expected


async def test_a_secret_the_key_cannot_decrypt_fails_its_install_only(store: SqlInstallStore) -> None:
    """One such row (written under a key since dropped) broke every listing of installs, and with it
    cron for every install; a key that decrypts nothing is refused when the store opens."""
    from applications.premium import PremiumApplication
    from worker.errors import StopError
    from worker.store.crypto import SecretBox, SecretKeyError

    await store.add_install(_install("good"))
    under_another_key = SqlInstallStore(store._engine, SecretBox(SecretBox.generate_key()))
    await under_another_key.add_install(_install("lost"))

    good, lost = await store.list_installs()
    assert (good.user, good.secrets, good.unreadable_secrets) == ("good", {"token": SECRET}, [])
    assert (lost.user, lost.secrets, lost.unreadable_secrets) == ("lost", {}, ["token"])
    with pytest.raises(StopError, match="premium token cannot be decrypted"):
        PremiumApplication._token(lost)
    await store.check_secret_key()  # some secrets decrypt: the key is right, one row is not

    wrong_key = SqlInstallStore(store._engine, SecretBox(SecretBox.generate_key()))
    with pytest.raises(SecretKeyError, match="decrypts none of the 2 stored secrets"):
        await wrong_key.check_secret_key()


async def test_a_right_key_is_not_refused_for_the_rows_it_happened_to_read_first(store: SqlInstallStore) -> None:
    """The check read 20 rows: 25 of old installs under a key since dropped, read first, refused a
    key that reads every newer install."""
    from worker.store.crypto import SecretBox

    dropped = SqlInstallStore(store._engine, SecretBox(SecretBox.generate_key()))
    for n in range(25):
        await dropped.add_install(_install(f"old-{n:02d}"))
    await store.add_install(_install("new"))
    await store.check_secret_key()


@pytest.mark.postgres
@pytest.mark.parametrize("store_factory", ["postgresql"], indirect=True)  # a session that can be dropped
async def test_a_dropped_database_connection_is_retryable_and_the_next_call_reconnects(
    store_factory: Factory,
) -> None:
    """A database restart or a network blip must not send the message being handled to trash."""
    from worker.errors import StoreUnavailable

    store = await store_factory()
    assert store._engine.dialect.name == "postgresql"

    async with store._engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    other = await store_factory()
    async with other._engine.connect() as conn:
        assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()

    with pytest.raises(StoreUnavailable, match="install store unavailable"):
        await store.get_install("u1", "shoptet-premium")
    assert await store.get_install("u1", "shoptet-premium") is None  # a fresh connection answers


@pytest.mark.postgres
@pytest.mark.parametrize("store_factory", ["postgresql"], indirect=True)
async def test_a_statement_postgresql_refuses_is_not_an_outage(store_factory: Factory) -> None:
    """asyncpg reports a value too long for its column as a plain DBAPIError: read as an outage, a
    webhook got 500 on every delivery and a message retried to its last hop for a permanent refusal."""
    from sqlalchemy.exc import DBAPIError

    from worker.errors import StoreUnavailable

    store = await store_factory()
    with pytest.raises(DBAPIError) as refused:
        await store.acquire_lease("x" * 600, "owner", 60)
    assert not isinstance(refused.value, StoreUnavailable)
    assert "too long" in str(refused.value)


async def test_rotation_re_encrypts_every_secret_under_the_new_key(store: SqlInstallStore) -> None:
    """With ``NEW,OLD`` workers read both, but secrets written once (tokens at install) stayed under
    OLD: dropping OLD then refused the start. After ``secrets rotate``, NEW alone reads them all."""
    from worker.store.crypto import SecretBox, SecretKeyError

    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    on_old = SqlInstallStore(store._engine, SecretBox(old))
    await on_old.add_install(_install("a"))
    await on_old.put_token("a/access", "access-token", expires)
    lost = SqlInstallStore(store._engine, SecretBox(SecretBox.generate_key()))
    await lost.add_install(_install("lost"))
    await lost.put_token("lost/access", "other-token", expires)

    done = await SqlInstallStore(store._engine, SecretBox(f"{new},{old}")).rotate_secrets()

    assert (done.secrets, done.tokens, done.dropped_tokens) == (1, 1, 1)
    assert done.unreadable == ["lost/shoptet-premium: token"]
    on_new = SqlInstallStore(store._engine, SecretBox(new))
    a = await on_new.get_install("a", "shoptet-premium")
    assert a is not None and a.secrets == {"token": SECRET}
    assert await on_new.get_token("a/access") == ("access-token", expires)
    assert await on_new.get_token("lost/access") is None
    with pytest.raises(SecretKeyError):
        await SqlInstallStore(store._engine, SecretBox(old)).check_secret_key()


async def test_a_cached_token_the_key_cannot_decrypt_is_a_cache_miss(store: SqlInstallStore) -> None:
    """Written by a worker already on a new key: the addon fetches a new token instead of sending
    every message of the install to trash until that worker refreshes it."""
    from worker.store.crypto import SecretBox

    elsewhere = SqlInstallStore(store._engine, SecretBox(SecretBox.generate_key()))
    await elsewhere.put_token("k", "theirs", datetime(2030, 1, 1, tzinfo=UTC))
    assert await store.get_token("k") is None
    await store.delete_token("k", token="theirs")  # not readable here, so not "that one": kept
    assert await elsewhere.get_token("k") is not None
