"""GET /shoptet/install: code in, install stored, then 200; a failed exchange stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from fastapi import FastAPI
from pydantic import SecretStr
from structlog.testing import capture_logs

from worker.errors import StoreUnavailable
from worker.http.install_callback import router
from worker.settings import Settings
from worker.store.sql import SqlInstallStore

OAUTH = "https://oauth.test"
TOKEN_URL = f"{OAUTH}/action/ApiOAuthServer/token"


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "shoptet_oauth_client_id": "cid",
        "shoptet_oauth_client_secret": SecretStr("csecret"),
        "shoptet_oauth_redirect_url": "https://worker.test/shoptet/install",
        "shoptet_oauth_server_url": OAUTH,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def app(store: SqlInstallStore, http: httpx.AsyncClient) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    app.state.store, app.state.http, app.state.settings = store, http, _settings()
    return app


@pytest.fixture
async def worker(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker") as client:
        yield client


async def test_code_to_stored_install(worker: httpx.AsyncClient, shoptet: respx.Router, store: SqlInstallStore) -> None:
    route = shoptet.post(TOKEN_URL).respond(
        200,
        json={
            "access_token": "perm-oauth",
            "eshopId": 42,
            "eshopUrl": "https://shop.test/",
            "contactEmail": "a@shop.test",
        },
    )
    response = await worker.get("/shoptet/install", params={"code": "c" * 255})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "installed", "eshopId": "42", "user": "42"}
    assert parse_qs(route.calls.last.request.content.decode())["redirect_uri"] == [
        "https://worker.test/shoptet/install"
    ]
    stored = await store.find_by_eshop("42", "shoptet")
    assert stored is not None and stored.enabled
    assert stored.settings == {"eshopId": 42, "eshopUrl": "https://shop.test/", "contactEmail": "a@shop.test"}
    assert stored.secrets == {"oauthToken": "perm-oauth"}
    assert "perm-oauth" not in response.text


async def test_refused_code_answers_400_and_stores_nothing(
    worker: httpx.AsyncClient, shoptet: respx.Router, store: SqlInstallStore
) -> None:
    shoptet.post(TOKEN_URL).respond(400, json={"error": "invalid_grant", "error_description": "Code already used"})
    response = await worker.get("/shoptet/install", params={"code": "used"})
    assert response.status_code == 400
    assert "Code already used" in response.json()["message"]
    assert await store.list_installs() == []


async def test_oauth_outage_answers_502(
    worker: httpx.AsyncClient, shoptet: respx.Router, store: SqlInstallStore
) -> None:
    shoptet.post(TOKEN_URL).mock(side_effect=httpx.ConnectTimeout("slow"))
    response = await worker.get("/shoptet/install", params={"code": "x"})
    assert response.status_code == 502
    assert await store.list_installs() == []


async def test_a_store_blip_after_the_exchange_is_waited_out(
    worker: httpx.AsyncClient, shoptet: respx.Router, store: SqlInstallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code is used up once exchanged: the store not answering raised out as a 500, and the
    e-shop's permanent OAuth token was thrown away. A blip is waited out; an outage is a 503 that
    names the e-shop in the log (the token never)."""
    from applications import installs

    shoptet.post(TOKEN_URL).respond(200, json={"access_token": "perm-oauth", "eshopId": 43})
    add = store.add_install
    failures = [StoreUnavailable("install store unavailable: connection refused")]

    async def blip(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await add(*args, **kwargs)

    monkeypatch.setattr(store, "add_install", blip)
    response = await worker.get("/shoptet/install", params={"code": "fresh"})
    assert response.status_code == 200, response.text
    assert await store.find_by_eshop("43", "shoptet") is not None

    async def down(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("install store unavailable: connection refused")

    monkeypatch.setattr(store, "add_install", down)
    monkeypatch.setattr(installs, "STORE_RETRY_SECONDS", 0.2)
    with capture_logs() as logs:
        response = await worker.get("/shoptet/install", params={"code": "another"})
    assert response.status_code == 503
    [lost] = [e for e in logs if e["event"] == "addon install lost: the store did not take it"]
    assert lost["eshop_id"] == "43" and "perm-oauth" not in str(logs)


async def test_missing_code_and_missing_configuration(
    worker: httpx.AsyncClient, app: FastAPI, store: SqlInstallStore
) -> None:
    assert (await worker.get("/shoptet/install")).status_code == 400
    app.state.settings = _settings(shoptet_oauth_client_secret=None)
    response = await worker.get("/shoptet/install", params={"code": "x"})
    assert response.status_code == 503
    assert "SHOPTET_OAUTH_CLIENT_SECRET" in response.json()["message"]
    assert await store.list_installs() == []


async def test_a_reinstall_through_the_callback_drops_a_hand_given_oauth_server_and_keeps_watermarks(
    worker: httpx.AsyncClient, shoptet: respx.Router, store: SqlInstallStore
) -> None:
    from applications.installs import install_addon_with_token

    await install_addon_with_token(store, user="42", eshop_id="42", oauth_token="old", oauth_server_url="https://old/")
    await store.set_setting("42", "shoptet", "lastRunListOrderChanges", "2024-05-19T00:00:00Z")
    shoptet.post(TOKEN_URL).respond(200, json={"access_token": "new", "eshopId": 42, "eshopUrl": "https://shop.test/"})

    response = await worker.get("/shoptet/install", params={"code": "c"})

    assert response.status_code == 200, response.text
    stored = await store.get_install("42", "shoptet")
    assert stored is not None
    assert stored.settings == {
        "eshopId": 42,
        "eshopUrl": "https://shop.test/",
        "lastRunListOrderChanges": "2024-05-19T00:00:00Z",
    }
    assert stored.secrets == {"oauthToken": "new"}


async def test_a_set_up_cut_short_by_a_stop_says_so() -> None:
    """Cancelled at a stop while it waited to try again, it vanished: nothing logged, nothing
    tried after the restart."""
    import asyncio

    from structlog.testing import capture_logs

    from worker.errors import RetryableError
    from worker.http.install_callback import _retrying
    from worker.store import Install

    failed = asyncio.Event()

    async def broker_away() -> None:
        failed.set()
        raise RetryableError("broker unreachable")

    with capture_logs() as logs:
        retrying = asyncio.create_task(
            _retrying("the `installed` start of x", Install(user="u", application="shoptet"), broker_away, 600.0)
        )
        await failed.wait()
        retrying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await retrying
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "the `installed` start of x was cut short by a stop; an operator runs it by hand"
    ]


async def test_a_stop_during_the_key_names_the_installed_starts_that_did_not_run() -> None:
    """Cut short while the key was still being tried, only the key was named: webhooks-subscribe
    never ran for the new shop, and nothing said so."""
    import asyncio
    from types import SimpleNamespace

    from structlog.testing import capture_logs

    from worker.catalog import TopologyCatalog
    from worker.errors import RetryableError
    from worker.http.install_callback import _set_up
    from worker.registry import default_registry
    from worker.runtime import Runtime
    from worker.store import Install
    from worker.topology import parse_topology

    registry = default_registry()
    catalog = TopologyCatalog(registry)
    source = (
        "name: subscribe\napplication: shoptet\nstart: [{installed: true}]\n"
        "nodes:\n  s: {node: shoptet-subscribe-webhooks}\n"
    )
    catalog.add_local(parse_topology(source, registry=registry), True)
    asked = asyncio.Event()

    async def store_away(user: str, application: str) -> None:
        asked.set()
        raise RetryableError("store unavailable")

    runtime = object.__new__(Runtime)  # only what the set-up reads
    runtime.catalog = catalog
    runtime.store = SimpleNamespace(get_install=store_away)  # type: ignore[assignment]
    with capture_logs() as logs:
        setting_up = asyncio.create_task(_set_up(runtime, Install(user="u", application="shoptet")))
        await asyncio.wait_for(asked.wait(), 5)
        setting_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await setting_up
    errors = [(e["event"], e.get("topology")) for e in logs if e["log_level"] == "error"]
    assert (
        "a stop came before the new install's `installed` start; an operator runs it by hand",
        "subscribe",
    ) in errors
