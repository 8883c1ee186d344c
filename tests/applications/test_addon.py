"""shoptet (OAuth addon): one shared access token per install, refreshed once, early, on demand."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

import httpx
import pytest
import respx

from applications.addon import AddonApplication, access_token_key
from applications.client import ShoptetClient
from applications.installs import install_addon_with_token
from worker.errors import RetryableError, StopError
from worker.limiter import LocalLimiter
from worker.store import Install
from worker.store.crypto import SecretBox
from worker.store.sql import SqlInstallStore

OAUTH = "https://oauth.test"
API = "https://api.test"
TOKEN_URL = f"{OAUTH}/action/ApiOAuthServer/getAccessToken"
EXPIRED = {"errors": [{"errorCode": "expired-token", "message": "Access token expired."}]}
#: What Shoptet says of a token it revoked (more than 5 issued for the install, say).
REVOKED = {"errors": [{"errorCode": "invalid-token", "message": "Invalid access token."}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def token_server(shoptet: respx.Router, *, delay: float = 0.0, expires_in: int = 1800) -> respx.Route:
    """getAccessToken that hands out acc-1, acc-2, ... (after ``delay``, to make callers overlap)."""
    counter = itertools.count(1)

    async def issue(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer perm-oauth"
        await asyncio.sleep(delay)
        return httpx.Response(200, json={"access_token": f"acc-{next(counter)}", "expires_in": expires_in})

    return shoptet.get(TOKEN_URL).mock(side_effect=issue)


async def _installed(store: SqlInstallStore) -> Install:
    return await install_addon_with_token(store, user="42", eshop_id="42", oauth_token="perm-oauth")


def _app(store: SqlInstallStore, http: httpx.AsyncClient, clock: Clock | None = None) -> AddonApplication:
    return AddonApplication(store=store, http=http, oauth_server_url=OAUTH, clock=clock or Clock())


async def test_token_is_fetched_once_cached_encrypted_and_refreshed_30s_early(
    shoptet: respx.Router, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    route = token_server(shoptet)
    clock = Clock()
    app = _app(store, http, clock)
    install = await _installed(store)

    assert await app.auth_headers(install) == {"Shoptet-Access-Token": "acc-1"}
    assert await app.auth_headers(install) == {"Shoptet-Access-Token": "acc-1"}
    assert route.call_count == 1
    cached = await store.get_token(access_token_key("42", "perm-oauth"))
    assert cached == ("acc-1", datetime.fromtimestamp(clock.now + 1800 - 30, UTC))

    clock.now += 1800 - 31
    assert (await app.access_token(install)) == "acc-1"
    clock.now += 2  # inside the 30 s margin
    assert (await app.access_token(install)) == "acc-2"
    assert route.call_count == 2


@pytest.mark.parametrize("answer", [EXPIRED, REVOKED], ids=["expired", "revoked"])
async def test_fifty_requests_with_an_expired_token_cause_one_refresh(
    shoptet: respx.Router, http: httpx.AsyncClient, store: SqlInstallStore, answer: dict[str, object]
) -> None:
    install = await _installed(store)
    clock = Clock()
    # Our cache says the token is good for another hour; Shoptet says it has expired.
    await store.put_token(access_token_key("42", "perm-oauth"), "stale", datetime.fromtimestamp(clock.now + 3600, UTC))
    refresh = token_server(shoptet, delay=0.05)

    rejected: list[str] = []

    def orders(request: httpx.Request) -> httpx.Response:
        if request.headers["Shoptet-Access-Token"] == "stale":
            rejected.append("stale")
            return httpx.Response(401, json=answer)
        return httpx.Response(200, json={"data": {"token": request.headers["Shoptet-Access-Token"]}})

    api = shoptet.get(f"{API}/api/orders").mock(side_effect=orders)
    app = _app(store, http, clock)
    limiter = LocalLimiter(per_token=50)
    client = ShoptetClient(http=http, application=app, install=install, limiter=limiter, base_url=API)

    results = await asyncio.gather(*(client.request("GET", "/api/orders") for _ in range(50)))

    assert refresh.call_count == 1
    assert app.refreshes == 1
    assert {r["data"]["token"] for r in results} == {"acc-1"}
    assert len(rejected) > 10  # many requests really did fail with the expired token together
    assert api.call_count == 50 + len(rejected)  # each of those was repeated once


async def test_a_token_that_expires_while_its_request_waits_for_a_slot_is_not_sent(
    shoptet: respx.Router, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    """The token is read once the request has its connection slot: read before a long wait (the
    token's 3 connections busy), it went out expired and cost a 401 and a second request."""
    install = await _installed(store)
    clock = Clock()
    await store.put_token(access_token_key("42", "perm-oauth"), "cached", datetime.fromtimestamp(clock.now + 60, UTC))
    token_server(shoptet)
    sent: list[str] = []

    def orders(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Shoptet-Access-Token"])
        return httpx.Response(200, json={"data": {}})

    shoptet.get(f"{API}/api/orders").mock(side_effect=orders)
    app = _app(store, http, clock)
    limiter = LocalLimiter(per_token=1)
    client = ShoptetClient(http=http, application=app, install=install, limiter=limiter, base_url=API)
    async with limiter.slot(app.limiter_key(install)):  # another request holds the only connection
        waiting = asyncio.create_task(client.request("GET", "/api/orders"))
        await asyncio.sleep(0.05)
        clock.now += 120  # it waits past the cached token's time
    await asyncio.wait_for(waiting, 5)
    assert sent == ["acc-1"]


async def test_a_refresh_under_way_at_a_reinstall_does_not_serve_the_old_installs_token(
    shoptet: respx.Router, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    """The e-shop uninstalls and installs the addon again while a refresh with its old OAuth token
    is on its way: that token was cached for the new install and its requests failed with 401."""

    async def issue(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        oauth_token = request.headers["Authorization"].removeprefix("Bearer ")
        return httpx.Response(200, json={"access_token": f"acc-from-{oauth_token}", "expires_in": 1800})

    shoptet.get(TOKEN_URL).mock(side_effect=issue)
    app = _app(store, http)
    old = await _installed(store)
    refreshing = asyncio.create_task(app.access_token(old))
    await asyncio.sleep(0.05)
    await store.remove_install("42", "shoptet")
    new = await install_addon_with_token(store, user="42", eshop_id="42", oauth_token="new-oauth")
    assert await refreshing == "acc-from-perm-oauth"
    assert await app.access_token(new) == "acc-from-new-oauth"


async def test_two_processes_sharing_the_store_refresh_once(
    shoptet: respx.Router, http: httpx.AsyncClient, db_url: str, secret_box: SecretBox
) -> None:
    """Two applications on two connections to one database stand in for two worker processes."""
    one = await SqlInstallStore.open(db_url, secret_box)
    two = await SqlInstallStore.open(db_url, secret_box)
    try:
        install = await _installed(one)
        route = token_server(shoptet, delay=0.1)
        apps = [_app(one, http), _app(two, http)]
        tokens = await asyncio.gather(*(apps[i % 2].access_token(install) for i in range(40)))
        assert set(tokens) == {"acc-1"}
        assert route.call_count == 1
        assert sorted(a.refreshes for a in apps) == [0, 1]
    finally:
        await one.close()
        await two.close()


async def test_a_late_expired_token_report_does_not_drop_the_new_token(
    shoptet: respx.Router, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    token_server(shoptet)
    install = await _installed(store)
    app = _app(store, http)
    first = await app.auth_headers(install)
    assert await app.token_expired(install, first) is True
    second = await app.auth_headers(install)
    assert second == {"Shoptet-Access-Token": "acc-2"}
    assert await app.token_expired(install, first) is True  # a slow request reporting acc-1 ...
    assert (await store.get_token(access_token_key("42", "perm-oauth")))[0] == "acc-2"  # type: ignore[index]
    assert await app.token_expired(install, {}) is False


async def test_oauth_server_refusal_and_outage(
    shoptet: respx.Router, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    install = await _installed(store)
    app = _app(store, http)
    shoptet.get(TOKEN_URL).respond(401, json={"error": "invalid_token", "error_description": "Token revoked"})
    with pytest.raises(StopError, match="Token revoked"):
        await app.access_token(install)
    shoptet.get(TOKEN_URL).respond(503, text="maintenance")
    with pytest.raises(RetryableError):
        await app.access_token(install)
    assert await store.get_token(access_token_key("42", "perm-oauth")) is None


async def test_callers_waiting_on_a_failing_refresh_share_its_failure(
    shoptet: respx.Router, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    """Ten messages of one install need a token while the OAuth server is down: one call, not ten
    in a row (each up to the request timeout)."""
    install = await _installed(store)
    app = _app(store, http)

    async def down(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(503, text="maintenance")

    route = shoptet.get(TOKEN_URL).mock(side_effect=down)
    results = await asyncio.gather(*(app.access_token(install) for _ in range(10)), return_exceptions=True)

    assert all(isinstance(r, RetryableError) for r in results)
    assert route.call_count == 1
    token_server(shoptet)  # back up: the next caller asks again
    assert await app.access_token(install) == "acc-1"


async def test_server_url_precedence(http: httpx.AsyncClient, store: SqlInstallStore) -> None:
    app = AddonApplication(store=store, http=http)
    bare = Install(user="u", application="shoptet")
    with pytest.raises(StopError, match="no OAuth server URL"):
        app.server_url(bare)
    with_eshop = bare.model_copy(update={"settings": {"eshopUrl": "https://shop.test"}})
    assert app.server_url(with_eshop) == "https://shop.test"
    app.oauth_server_url = OAUTH
    assert app.server_url(with_eshop) == OAUTH
    own = bare.model_copy(update={"settings": {"oauthServerUrl": "https://own.test", "eshopUrl": "x"}})
    assert app.server_url(own) == "https://own.test"


async def test_secrets_stay_out_of_reprs(store: SqlInstallStore, http: httpx.AsyncClient) -> None:
    install = await _installed(store)
    app = _app(store, http)
    for text in (repr(install), str(install), repr(app), repr(store), repr(app.store)):
        assert "perm-oauth" not in text
