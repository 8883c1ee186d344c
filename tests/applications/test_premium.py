"""shoptet-premium: header, limiter key, and token verification at install."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from applications.client import ShoptetClient
from applications.installs import install_premium
from applications.premium import InvalidPremiumToken, PremiumApplication
from worker.errors import RetryableError, StopError
from worker.limiter import LocalLimiter
from worker.store import Install
from worker.store.sql import SqlInstallStore

API = "https://api.test"
ESHOP = {"data": {"contactInformation": {"eshopId": 777, "eshopName": "Shop", "url": "https://shop.test/"}}}


def _install(token: str = "premium-token") -> Install:
    return Install(user="u", application="shoptet-premium", eshop_id="777", secrets={"token": token})


async def test_headers_and_absolute_urls(shoptet: respx.Router, http: httpx.AsyncClient) -> None:
    app = PremiumApplication()
    api = shoptet.get(f"{API}/api/orders").respond(200, json={"data": {"orders": []}, "errors": None})
    result_file = shoptet.get("https://files.test/job/1.jsonl.gz").respond(200, content=b"x")
    client = ShoptetClient(http=http, application=app, install=_install(), limiter=LocalLimiter(), base_url=API)

    assert await client.request("GET", "/api/orders") == {"data": {"orders": []}, "errors": None}
    assert api.calls.last.request.headers["Shoptet-Private-API-Token"] == "premium-token"
    async with client.stream("https://files.test/job/1.jsonl.gz") as response:
        assert await response.aread() == b"x"
    # a result file on another host (the e-shop's domain) needs no token: it is not sent there
    assert "Shoptet-Private-API-Token" not in result_file.calls.last.request.headers
    on_api = shoptet.get(f"{API}/api-results/2.jsonl.gz").respond(200, content=b"y")
    async with client.stream(f"{API}/api-results/2.jsonl.gz") as response:
        assert await response.aread() == b"y"
    assert on_api.calls.last.request.headers["Shoptet-Private-API-Token"] == "premium-token"


async def test_a_download_from_another_host_takes_no_connection_slot(
    shoptet: respx.Router, http: httpx.AsyncClient
) -> None:
    """A snapshot file is not an API request: a long download must not hold one of the token's 3."""
    limiter = LocalLimiter(per_token=1)
    client = ShoptetClient(
        http=http, application=PremiumApplication(), install=_install(), limiter=limiter, base_url=API
    )
    shoptet.get("https://shop.test/api-results/1.jsonl.gz").respond(200, content=b"x")
    api = shoptet.get(f"{API}/api/eshop").respond(200, json={"data": {}, "errors": None})
    async with client.stream("https://shop.test/api-results/1.jsonl.gz"):
        # the token's only slot is free meanwhile: an API call goes through at once
        await asyncio.wait_for(client.request("GET", "/api/eshop"), timeout=5)
    assert api.call_count == 1


def test_limiter_key_is_shared_per_token_and_hides_it() -> None:
    app = PremiumApplication()
    key = app.limiter_key(_install())
    assert "premium-token" not in key
    assert key == app.limiter_key(_install().model_copy(update={"user": "other"}))
    assert key != app.limiter_key(_install("another-token"))


async def test_missing_token_is_a_stop_error() -> None:
    with pytest.raises(StopError):
        await PremiumApplication().auth_headers(Install(user="u", application="shoptet-premium"))


async def test_install_verifies_the_token_and_stores_the_eshop_id(
    shoptet: respx.Router, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    route = shoptet.get(f"{API}/api/eshop").respond(200, json=ESHOP)
    await install_premium(store, http, api_url=API, user="u", token="premium-token")
    assert route.calls.last.request.headers["Shoptet-Private-API-Token"] == "premium-token"
    stored = await store.get_install("u", "shoptet-premium")
    assert stored is not None
    assert stored.eshop_id == "777" and stored.settings["eshopId"] == 777
    assert stored.secrets == {"token": "premium-token"}


async def test_invalid_token_is_refused_with_shoptets_message_and_nothing_stored(
    shoptet: respx.Router, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    shoptet.get(f"{API}/api/eshop").respond(
        401,
        json={"data": None, "errors": [{"errorCode": "invalid-token", "message": "Invalid access token."}]},
    )
    with pytest.raises(InvalidPremiumToken, match=r"invalid-token: Invalid access token\."):
        await install_premium(store, http, api_url=API, user="u", token="bad")
    assert await store.list_installs() == []


async def test_an_answer_that_never_ends_frees_its_connection_after_the_timeout(shoptet: respx.Router) -> None:
    """The client's timeout bounds each read only: an answer trickling in held one of the token's
    3 connections for as long as it ran."""
    import asyncio

    async def trickle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={"data": None})

    shoptet.get(f"{API}/api/orders").mock(side_effect=trickle)
    transport = httpx.MockTransport(shoptet.async_handler)
    async with httpx.AsyncClient(transport=transport, timeout=0.2) as http:
        limiter = LocalLimiter()
        client = ShoptetClient(
            http=http, application=PremiumApplication(), install=_install(), limiter=limiter, base_url=API
        )
        # the answer's 0.2 s, and as long again to get a connection
        with pytest.raises(RetryableError, match=r"no whole answer within 0\.4 s"):
            await asyncio.wait_for(client.request("GET", "/api/orders"), 2)


async def test_an_answer_that_cannot_be_decoded_is_retried(shoptet: respx.Router, http: httpx.AsyncClient) -> None:
    """A proxy's error page labelled gzip: httpx's DecodingError went to trash as a node's bug."""
    gateway_page = httpx.ByteStream(b"<html>bad gateway</html>")
    shoptet.get(f"{API}/api/orders").mock(
        return_value=httpx.Response(502, stream=gateway_page, headers={"Content-Encoding": "gzip"})
    )
    client = ShoptetClient(
        http=http, application=PremiumApplication(), install=_install(), limiter=LocalLimiter(), base_url=API
    )
    with pytest.raises(RetryableError, match="could not be decoded"):
        await client.request("GET", "/api/orders")


async def test_a_429_waits_from_shoptets_clock_not_ours(shoptet: respx.Router, http: httpx.AsyncClient) -> None:
    """Retry-After is a date one second ahead of Shoptet's Date: against a clock two minutes slow,
    the message waited two minutes."""
    headers = {"Date": "Wed, 21 Oct 2015 07:28:00 GMT", "Retry-After": "Wed, 21 Oct 2015 07:28:01 GMT"}
    shoptet.get(f"{API}/api/orders").respond(429, json={"data": None, "errors": []}, headers=headers)
    client = ShoptetClient(
        http=http, application=PremiumApplication(), install=_install(), limiter=LocalLimiter(), base_url=API
    )
    with pytest.raises(RetryableError) as limited:
        await client.request("GET", "/api/orders")
    assert limited.value.retry_after == 1.0


async def test_a_success_page_that_is_not_json_is_retried(shoptet: respx.Router, http: httpx.AsyncClient) -> None:
    """A proxy's or a maintenance page answered 200: not Shoptet's answer yet, so not trash."""
    shoptet.get(f"{API}/api/eshop").respond(200, text="<html>maintenance</html>")
    client = ShoptetClient(
        http=http, application=PremiumApplication(), install=_install(), limiter=LocalLimiter(), base_url=API
    )
    with pytest.raises(RetryableError, match="answer is not JSON"):
        await client.request("GET", "/api/eshop")


async def test_a_failed_download_names_no_query(shoptet: respx.Router, http: httpx.AsyncClient) -> None:
    """A result file's URL may carry its signed access in the query: the error text goes to trash."""
    garbled = "400, message='Duplicate Content-Length', url='https://files.test/job/1.jsonl.gz?signature=s3cr3t'"
    shoptet.get("https://files.test/job/1.jsonl.gz").mock(side_effect=httpx.RemoteProtocolError(garbled))
    client = ShoptetClient(
        http=http, application=PremiumApplication(), install=_install(), limiter=LocalLimiter(), base_url=API
    )
    with pytest.raises(RetryableError) as failed:
        async with client.stream("https://files.test/job/1.jsonl.gz?signature=s3cr3t"):
            pass
    assert "https://files.test/job/1.jsonl.gz" in failed.value.message and "s3cr3t" not in failed.value.message


async def test_a_deprecated_endpoint_is_logged_once_with_its_sunset(
    shoptet: respx.Router, http: httpx.AsyncClient
) -> None:
    """Shoptet announces the end of an endpoint in headers and asks clients to log them."""
    warned = {"X-Shoptet-Deprecated": "Attribute 'foo' is deprecated", "Sunset": "Wed, 01 Dec 2027 00:00:00 GMT"}
    shoptet.get(url__regex=rf"{API}/api/orders/\w+").respond(200, json={"data": {}, "errors": None}, headers=warned)
    shoptet.get(f"{API}/api/eshop").respond(200, json={"data": {}, "errors": None})
    client = ShoptetClient(
        http=http, application=PremiumApplication(), install=_install(), limiter=LocalLimiter(), base_url=API
    )
    with capture_logs() as logs:
        for code in ("2024000001", "2024000002", "2024000003"):
            await client.request("GET", f"/api/orders/{code}")
        await client.request("GET", "/api/eshop")
    deprecations = [e for e in logs if e["event"] == "Shoptet deprecates this endpoint"]
    assert deprecations == [
        {
            "event": "Shoptet deprecates this endpoint",
            "log_level": "warning",
            "method": "GET",
            "endpoint": "/api/orders/{id}",
            "deprecated": "Attribute 'foo' is deprecated",
            "sunset": "Wed, 01 Dec 2027 00:00:00 GMT",
        }
    ]
